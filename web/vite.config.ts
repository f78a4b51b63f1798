import adapter from '@sveltejs/adapter-node';
import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

// SvelteKit 3 takes its configuration here, in the Vite plugin (a svelte.config.js is refused).
export default defineConfig({
  plugins: [
    sveltekit({
      adapter: adapter({ out: 'build' }),
      // The dashboard sends no third-party scripts; everything inline gets a nonce.
      csp: {
        mode: 'auto',
        directives: {
          'default-src': ['self'],
          'script-src': ['self'],
          'style-src': ['self', 'unsafe-inline'],
          'img-src': ['self', 'data:'],
          // supabase-js opens the realtime WebSocket to PUBLIC_SUPABASE_URL, which may be another origin.
          'connect-src': ['self', 'ws:', 'wss:', 'http:', 'https:'],
          'object-src': ['none'],
          'base-uri': ['self'],
          'frame-ancestors': ['none'],
        },
      },
    }),
  ],
});
