import type { HandleClientError } from '@sveltejs/kit/hooks';

/** Errors in the browser (a failed navigation, a component that threw): logged, shown generically. */
export const handleError: HandleClientError = ({ kind, error }) => {
  if (kind !== 'unknown') return;
  const id = crypto.randomUUID();
  console.error(`[bfg] unexpected error ${id}`, error);
  return { message: 'Something went wrong in the page.', id };
};
