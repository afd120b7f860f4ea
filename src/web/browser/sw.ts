// Service worker of the installable web knock page (`sesame web export --dir`):
// caches the page, its manifest and icons at install so the page opens
// offline from the home screen. Cache-first for its own files only; it never
// touches other requests (the page makes none: knocks go over WebRTC).
declare const self: ServiceWorkerGlobalScope;
const CACHE = 'sesame-web-__BUILD__';
const FILES = ['./', 'index.html', 'manifest.webmanifest', 'icon.svg', 'icon-192.png', 'icon-512.png'];

self.addEventListener('install', (ev) => {
  ev.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (ev) => {
  ev.waitUntil(caches.keys().then((names) => Promise.all(names.filter((n) => n.startsWith('sesame-web-') && n !== CACHE).map((n) => caches.delete(n)))).then(() => self.clients.claim()));
});

self.addEventListener('fetch', (ev) => {
  const url = new URL(ev.request.url);
  if (ev.request.method !== 'GET' || url.origin !== self.location.origin) return;
  ev.respondWith(caches.match(ev.request, { ignoreSearch: true }).then((hit) => hit ?? fetch(ev.request)));
});
