import type { Session } from '#lib/server/auth/session.ts';

declare global {
  namespace App {
    interface Error {
      status: number;
      message: string;
      /** Quoted to support: the same id is in the server log (and Sentry). */
      id?: string;
    }
    interface Locals {
      session: Session | null;
    }
  }
}

export {};
