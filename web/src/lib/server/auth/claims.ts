import { z } from 'zod';

/** The JWT claims BFG relies on (Supabase Auth's shape; other claims pass through to RLS). */
export const claimsSchema = z.looseObject({
  sub: z.uuid(),
  role: z.literal('authenticated'),
  email: z.string().optional(),
  exp: z.number(),
  app_metadata: z.looseObject({ role: z.string().optional() }).default({}),
});
export type Claims = z.infer<typeof claimsSchema>;

/** What pages may know about the signed-in user. */
export interface SessionUser {
  id: string;
  email: string;
  /** Same rule as the database's private.is_admin(): app_metadata.role = 'admin'. */
  isAdmin: boolean;
}

export function userOf(claims: Claims): SessionUser {
  return { id: claims.sub, email: claims.email ?? '', isAdmin: claims.app_metadata.role === 'admin' };
}
