// Injected by esbuild into the page bundle (scripts/build-web.mjs): the SPA
// codec uses Node's global Buffer; in the browser it is the `buffer` package.
export { Buffer } from 'buffer';
