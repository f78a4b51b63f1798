import { z } from 'zod';

// The site forms (Manage sites), validated like the database's checks so a bad value gets a
// message next to its field.

/**
 * The slug is the first level of every topic the site's gateways publish (`<slug>/gateway/…`),
 * the default subscription (`<slug>/#`) and client id (`bfg-<slug>`): one MQTT topic level, so no
 * `/`, `+` or `#`, no spaces, not starting with `$` (brokers keep `$…` for themselves). The
 * database allows `[A-Za-z0-9_.-]{1,64}` (site_slug_format); the form also wants a letter or digit
 * first. It cannot be changed once devices publish under it, so the form sets it only on create.
 */
export const siteSlugSchema = z
  .string()
  .trim()
  .min(1, 'Slug is required')
  .max(64, 'Slug must be at most 64 characters')
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]*$/,
    'Slug: letters, digits, _ . - only, starting with a letter or digit (it is the first level of every topic: no /, +, #, $ or spaces)',
  );

const name = z.string().trim().min(1, 'Name is required').max(200, 'Name must be at most 200 characters');
const description = z.preprocess(
  (v) => (typeof v === 'string' && v.trim() === '' ? null : typeof v === 'string' ? v.trim() : v),
  z.string().max(2000, 'Description must be at most 2,000 characters').nullable(),
);
const checkbox = z.preprocess((v) => v === 'on' || v === 'true', z.boolean());

export const newSiteSchema = z.object({ slug: siteSlugSchema, name, description, is_active: checkbox });
export type NewSite = z.infer<typeof newSiteSchema>;

export const siteEditSchema = z.object({
  id: z.coerce.number().int().positive(),
  name,
  description,
  is_active: checkbox,
});
export type SiteEdit = z.infer<typeof siteEditSchema>;
