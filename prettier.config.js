/**
 * Formatting for the whole tree (`npm run format`; `npm run check` fails on unformatted files).
 * The settings are the ones the code was written in before Prettier arrived, so the one-off
 * formatting commit changed layout, not style.
 * @type {import('prettier').Config}
 */
export default {
  printWidth: 120,
  singleQuote: true,
  trailingComma: 'all',
  plugins: ['prettier-plugin-svelte'],
  overrides: [{ files: '*.svelte', options: { parser: 'svelte' } }],
};
