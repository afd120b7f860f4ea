import { build } from 'esbuild';
const r = await build({ entryPoints: [process.argv[2]], keepNames: true, minifyWhitespace: true, minifySyntax: true, bundle: true, platform: 'node', format: 'esm', target: 'node20', write: false, metafile: true, external: ['ioredis','qrcode'], outfile: '/tmp/x.js' });
const out = Object.values(r.metafile.outputs)[0];
const by = {};
for (const [k, v] of Object.entries(out.inputs)) { const m = k.match(/node_modules\/(@[^/]+\/[^/]+|[^/]+)/); const key = m ? m[1] : k.split('/').slice(0,2).join('/'); by[key] = (by[key]??0) + v.bytesInOutput; }
console.log('total', out.bytes); console.log(Object.entries(by).sort((a,b)=>b[1]-a[1]).slice(0,25).map(([k,v])=>`${(v/1024).toFixed(0)}K ${k}`).join('\n'));
