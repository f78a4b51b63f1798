import { defineParams } from '@sveltejs/kit/params';

/** Route parameter matchers: `[siteId=id]` only matches a database id and arrives as a number. */
export const params = defineParams({
  id: (param) => (/^[1-9][0-9]{0,14}$/.test(param) ? Number(param) : undefined),
});
