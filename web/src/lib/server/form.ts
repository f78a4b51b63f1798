import { z } from 'zod';

/** Field name → messages, as forms show them next to their inputs. */
export type FieldErrors = Partial<Record<string, string[]>>;

/** zod's field errors in the one shape every form uses. */
export function fieldErrors(error: z.ZodError): FieldErrors {
  return z.flattenError(error).fieldErrors;
}

/** A form's fields as strings (files are not accepted anywhere in the dashboard). */
export async function formFields(request: Request): Promise<Record<string, string>> {
  const data = await request.formData();
  const fields: Record<string, string> = {};
  for (const [name, value] of data) if (typeof value === 'string') fields[name] = value;
  return fields;
}
