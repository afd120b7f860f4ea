// Bounded HTTP probes for the metrics endpoint (test/metrics.test.ts), run inside a lab namespace:
//   get URL [METHOD]          -> one JSON line {status, body}
//   raw HOST PORT TEXT        -> sends TEXT as is; one JSON line {reply} (what came back before close, 3 s at most)
//   hold HOST PORT N MS       -> opens N idle connections, keeps them MS ms; one JSON line {connected}
import net from 'node:net';
const [mode, ...a] = process.argv.slice(2);
const out = (o) => { process.stdout.write(JSON.stringify(o) + '\n'); process.exit(0); };
setTimeout(() => out({ error: 'probe timed out' }), 20_000);
if (mode === 'get') {
  const res = await fetch(a[0], { method: a[1] ?? 'GET', signal: AbortSignal.timeout(10_000) }).catch((e) => ({ error: e.cause?.code ?? e.message }));
  if ('error' in res) out(res);
  else out({ status: res.status, body: await res.text() });
} else if (mode === 'raw') {
  const s = net.connect({ host: a[0], port: Number(a[1]) });
  let reply = '';
  s.on('connect', () => s.write(a[2].replace(/\\r\\n/g, '\r\n')));
  s.on('data', (d) => { reply += d.toString('latin1'); });
  s.on('close', () => out({ reply }));
  s.on('error', (e) => out({ error: e.code ?? e.message }));
  setTimeout(() => { s.destroy(); out({ reply, open: true }); }, 3000);
} else if (mode === 'hold') {
  let connected = 0;
  const socks = [];
  for (let i = 0; i < Number(a[2]); i++) {
    const s = net.connect({ host: a[0], port: Number(a[1]) });
    s.on('connect', () => { connected++; });
    s.on('error', () => undefined);
    socks.push(s);
  }
  setTimeout(() => { for (const s of socks) s.destroy(); out({ connected }); }, Number(a[3]));
} else {
  out({ error: `unknown mode ${mode}` });
}
