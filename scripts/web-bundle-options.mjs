// scripts/web-bundle-options.mjs -- the esbuild options that turn the project's
// SPA codec into browser code (docs/web-knock-page.md): node:crypto and node:net
// map to the shims over @noble/hashes / @noble/ciphers, Buffer to the `buffer`
// package. Shared by scripts/build-web.mjs and the tests that check the
// shimmed codec against the Node one (test/web-page-core.test.ts).
import path from 'node:path';

export function webBundleOptions(root) {
  const src = path.join(root, 'src/web/browser');
  return {
    bundle: true,
    write: false,
    minify: true,
    legalComments: 'none',
    platform: 'browser',
    target: ['chrome100', 'firefox102', 'safari15'],
    alias: { 'node:crypto': path.join(src, 'shims/crypto.ts'), 'node:net': path.join(src, 'shims/net.ts') },
    inject: [path.join(src, 'shims/buffer.ts')],
    define: { global: 'globalThis' },
    logLevel: 'warning',
  };
}
