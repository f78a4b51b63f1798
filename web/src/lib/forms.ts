import type { SubmitFunction } from '$app/forms';

// A form action `?/name` lands on the path without the page's query, and SvelteKit 3's enhance
// navigates there (as a native submission would), which would drop the filters and the page a
// list is on. These apply the form's answer to the page as it is.

/** `use:enhance={stayOnPage}`: the fields keep what is in them (checkboxes as just saved). */
export const stayOnPage: SubmitFunction =
  () =>
  async ({ update }) =>
    update({ reset: false, navigate: false });

/** `use:enhance={stayOnPageAndReset}`: a create form, emptied once it succeeded. */
export const stayOnPageAndReset: SubmitFunction =
  () =>
  async ({ update }) =>
    update({ navigate: false });
