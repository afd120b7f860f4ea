#!/usr/bin/env node
// scripts/build-web.mjs -- builds the web knock page (docs/web-knock-page.md), run by
// `npm run build` after tsc. esbuild bundles src/web/browser/main.ts with the
// project's own SPA codec (src/spa/), mapping node:crypto and node:net to the
// browser shims over @noble/hashes and @noble/ciphers and Buffer to the `buffer`
// package, so the page and the gateway share one protocol implementation.
// Output (dist/web/page/):
//   sesame.html              the single self-contained file (file://, http://, https://)
//   app/index.html + manifest.webmanifest + sw.js + icons: the installable version for HTTPS
// The Content-Security-Policy allows only the page's own inline script and style
// (by hash): no fetch, no external resource of any kind.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateSync } from 'node:zlib';
import { webBundleOptions } from './web-bundle-options.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'src/web/browser');
const out = path.join(root, 'dist/web/page');
const appDir = path.join(out, 'app');

const common = webBundleOptions(root);

async function bundle(entry, format, inject = common.inject) {
  const r = await build({ ...common, entryPoints: [path.join(src, entry)], format, inject });
  return r.outputFiles[0].text;
}

const sha256 = (text) => createHash('sha256').update(text, 'utf8').digest('base64');

function pageHtml(script, css, head, csp) {
  if (/<\/script/i.test(script)) throw new Error('build-web: the bundle contains "</script"; it cannot be inlined');
  const template = readFileSync(path.join(src, 'page.html'), 'utf8');
  // Function replacers: the bundle may contain "$&"-like sequences.
  return template.replace('__CSP__', () => csp).replace('__HEAD__', () => head).replace('__CSS__', () => css).replace('__SCRIPT__', () => script);
}

function csp(script, css, installable) {
  return [
    "default-src 'none'",
    `script-src 'sha256-${sha256(script)}'`,
    `style-src 'sha256-${sha256(css)}'`,
    "img-src 'self' data:",
    installable ? "manifest-src 'self'" : "manifest-src 'none'",
    installable ? "worker-src 'self'" : "worker-src 'none'",
    "connect-src 'none'",
    "form-action 'none'",
    "base-uri 'none'",
  ].join('; ');
}

// ---- icons (no image tool needed: a keyhole in a disc, drawn per pixel) ----
const CRC = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
function iconPng(size) {
  const bg = [0x12, 0x16, 0x1c], go = [0x1f, 0x8a, 0x5b];
  const rows = [];
  for (let y = 0; y < size; y++) {
    const row = Buffer.alloc(1 + size * 3);
    for (let x = 0; x < size; x++) {
      const u = (x + 0.5) / size, v = (y + 0.5) / size;
      const inDisc = (u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.44 ** 2;
      const inHead = (u - 0.5) ** 2 + (v - 0.41) ** 2 < 0.13 ** 2;
      const half = 0.07 + (v - 0.48) * 0.2;
      const inStem = v > 0.46 && v < 0.78 && Math.abs(u - 0.5) < half;
      const c = inDisc && !inHead && !inStem ? go : bg;
      row.set(c, 1 + x * 3);
    }
    rows.push(row);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0); ihdr.writeUInt32BE(size, 4); ihdr[8] = 8; ihdr[9] = 2;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.concat(rows))), chunk('IEND', Buffer.alloc(0))]);
}
const ICON_SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64" height="64" fill="#12161c"/><circle cx="32" cy="32" r="28" fill="#1f8a5b"/><circle cx="32" cy="26" r="8.5" fill="#12161c"/><path d="M27.5 30h9l3 20h-15z" fill="#12161c"/></svg>\n';

const script = await bundle('main.ts', 'iife');
const css = readFileSync(path.join(src, 'page.css'), 'utf8');
const buildId = sha256(script + css).replace(/[^A-Za-z0-9]/g, '').slice(0, 12);
mkdirSync(appDir, { recursive: true });
writeFileSync(path.join(out, 'sesame.html'), pageHtml(script, css, '', csp(script, css, false)));
const head = '<link rel="manifest" href="manifest.webmanifest">\n<link rel="icon" href="icon.svg" type="image/svg+xml">\n<link rel="apple-touch-icon" href="icon-192.png">';
writeFileSync(path.join(appDir, 'index.html'), pageHtml(script, css, head, csp(script, css, true)));
writeFileSync(path.join(appDir, 'manifest.webmanifest'), JSON.stringify({
  name: 'sesame knock',
  short_name: 'sesame',
  description: 'Knock on your sesame gateway (fwknop SPA over WebRTC)',
  start_url: './index.html',
  scope: './',
  display: 'standalone',
  background_color: '#12161c',
  theme_color: '#12161c',
  icons: [
    { src: 'icon.svg', sizes: 'any', type: 'image/svg+xml' },
    { src: 'icon-192.png', sizes: '192x192', type: 'image/png' },
    { src: 'icon-512.png', sizes: '512x512', type: 'image/png', purpose: 'any maskable' },
  ],
}, null, 2) + '\n');
writeFileSync(path.join(appDir, 'sw.js'), (await bundle('sw.ts', 'iife', [])).replace('__BUILD__', buildId));
writeFileSync(path.join(appDir, 'icon.svg'), ICON_SVG);
writeFileSync(path.join(appDir, 'icon-192.png'), iconPng(192));
writeFileSync(path.join(appDir, 'icon-512.png'), iconPng(512));
