import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin, type ProxyOptions } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));

// `npm run dev` serves the client with hot reload and proxies the API and the socket to a
// running Parley (`npm start`, or PARLEY_URL for another address).
const target = process.env.PARLEY_URL ?? 'http://127.0.0.1:8080';

// Parley allows only its own Host and Origin. The dev server is the origin the browser talks
// to, so the proxy presents the request as Parley's own: Host via changeOrigin, Origin here.
const asParley: ProxyOptions = {
  target,
  changeOrigin: true,
  configure(proxy) {
    proxy.on('proxyReq', (request) => {
      if (request.getHeader('origin') !== undefined) request.setHeader('origin', new URL(target).origin);
    });
  },
};

/**
 * Lit's `css` templates are kept verbatim by the minifier. Their comments and indentation are
 * dropped here (whitespace collapsed, none around braces, semicolons and commas or after colons);
 * selectors and values keep single spaces, so descendant combinators survive.
 */
function minifyLitCss(): Plugin {
  return {
    name: 'parley:minify-lit-css',
    apply: 'build',
    transform(code, id) {
      if (!id.includes('/client/src/') || !/\.ts$/.test(id) || !code.includes('css`')) return null;
      const minified = code.replace(/\bcss`([^`$]*)`/g, (_match, body: string) => {
        const css = body
          .replace(/\/\*[\s\S]*?\*\//g, '')
          .replace(/\s+/g, ' ')
          .replace(/\s*([{};,])\s*/g, '$1')
          // A colon is never followed by a space that matters (selectors have none, values don't care).
          .replace(/:\s+/g, ':')
          .trim();
        return `css\`${css}\``;
      });
      return { code: minified, map: null };
    },
  };
}

export default defineConfig({
  root,
  base: '/',
  plugins: [minifyLitCss()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // No inline module-preload polyfill: the CSP forbids inline script.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    // Source maps stay out of the served bundle.
    sourcemap: false,
  },
  server: {
    proxy: {
      '/api': asParley,
      // An http target upgrades too, and rewriteWsOrigin then sets Origin to Parley's http origin.
      '/ws': { ...asParley, ws: true, rewriteWsOrigin: true },
    },
  },
});
