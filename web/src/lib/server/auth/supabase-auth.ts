import { createClient, type Session as SupabaseSession } from '@supabase/supabase-js';
import { claimsSchema, userOf } from './claims.ts';
import { REFRESH_MARGIN_S, type AuthProvider, type Session, type SessionCookies } from './session.ts';
import { verifyAccessToken } from './verify-token.ts';

/**
 * Supabase Auth sessions: sign-in and refresh go to the project's Auth server; access tokens are
 * verified with the JWT secret when one is configured (legacy HS256 projects), otherwise with
 * `auth.getClaims`, which checks asymmetric signing keys against the project's JWKS.
 */
export function createSupabaseAuth(url: string, anonKey: string, jwtSecret: string | undefined): AuthProvider {
  // One stateless client for the process: no storage, no timers; every call passes its tokens.
  const supabase = createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });

  const verify = async (token: string) => {
    if (jwtSecret) return verifyAccessToken(token, jwtSecret);
    const { data, error } = await supabase.auth.getClaims(token);
    if (error || !data) return null;
    const claims = claimsSchema.safeParse(data.claims);
    return claims.success ? { claims: claims.data, expired: false as const } : null;
  };

  const fromSupabase = async (s: SupabaseSession): Promise<{ session: Session; cookies: SessionCookies } | null> => {
    const verified = await verify(s.access_token);
    if (!verified || verified.expired) return null;
    const { claims } = verified;
    return {
      session: { accessToken: s.access_token, expiresAt: claims.exp, claims, user: userOf(claims) },
      cookies: { access: s.access_token, refresh: s.refresh_token },
    };
  };

  return {
    async signIn(email, password) {
      const { data, error } = await supabase.auth.signInWithPassword({ email, password });
      if (error || !data.session) {
        // The same words for a wrong password as before (Supabase Auth says "Invalid login credentials").
        return {
          ok: false,
          message:
            error?.code === 'invalid_credentials' ? 'Wrong e-mail or password.' : (error?.message ?? 'Sign-in failed.'),
        };
      }
      const result = await fromSupabase(data.session);
      if (!result)
        return {
          ok: false,
          message: 'Supabase Auth returned a token this server cannot verify (check BFG_JWT_SECRET).',
        };
      return { ok: true, ...result };
    },

    async resume(cookies) {
      const verified = await verify(cookies.access).catch(() => null);
      const now = Math.floor(Date.now() / 1000);
      if (verified && !verified.expired && verified.claims.exp - now > REFRESH_MARGIN_S) {
        const { claims } = verified;
        return { session: { accessToken: cookies.access, expiresAt: claims.exp, claims, user: userOf(claims) } };
      }
      if (!cookies.refresh) return null;
      const { data, error } = await supabase.auth.refreshSession({ refresh_token: cookies.refresh });
      if (error || !data.session) return null;
      return fromSupabase(data.session);
    },

    async signOut(cookies) {
      // Revokes the refresh token server-side (GoTrue /logout), so a copied cookie cannot refresh.
      await fetch(new URL('/auth/v1/logout?scope=local', url), {
        method: 'POST',
        headers: { apikey: anonKey, authorization: `Bearer ${cookies.access}` },
      }).catch(() => undefined);
    },
  };
}
