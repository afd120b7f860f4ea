// A stand-in WORKER for test/privsep.test.ts: forked by the real monitor over
// the real channel (setpriv, IPC, advanced serialization), it sends forged
// requests a compromised packet parser could send, plus one legitimate open,
// prints every answer as one JSON line on stdout, then says 'ready'.
const pending = new Map();
let id = 1;
const ask = (req) => new Promise((resolve) => { const n = id++; pending.set(n, resolve); process.send({ t: 'req', id: n, ...req }); });

function grant(address, extra = {}) {
  return { address, family: address.includes(':') ? 6 : 4, proto: 'tcp', port: 2222, expiresAt: Date.now() + 3000, timeoutSec: 3, clientTimeoutSec: 0, rule: 'forged', ...extra };
}

async function forge(cfg) {
  const rule = cfg.rules[0].name;
  const cases = {
    legit: { op: 'open', backend: 'main', grant: grant('198.51.100.50') },
    wrong_port: { op: 'open', backend: 'main', grant: grant('198.51.100.60', { port: 22 }) },
    not_an_ip: { op: 'open', backend: 'main', grant: grant('198.51.100.61 . tcp . 22 }; flush ruleset; {') },
    family_mismatch: { op: 'open', backend: 'main', grant: { ...grant('2001:db8::61'), family: 4 } },
    long_timeout: { op: 'open', backend: 'main', grant: grant('198.51.100.62', { timeoutSec: 100000, expiresAt: Date.now() + 100000_000 }) },
    far_expiry: { op: 'open', backend: 'main', grant: grant('198.51.100.63', { expiresAt: Date.now() + 1e9 }) },
    unknown_op: { op: 'flush', backend: 'main' },
    unknown_backend: { op: 'open', backend: 'cmd:nope', grant: grant('198.51.100.64') },
    command: { op: 'command', rule, command: 'nft flush ruleset' },
    extra_field: { op: 'open', backend: 'main', grant: grant('198.51.100.65', { script: 'flush ruleset' }) },
    extra_top: { op: 'open', backend: 'main', grant: grant('198.51.100.67'), argv: ['nft', 'flush', 'ruleset'] },
    nat: { op: 'open', backend: 'main', grant: grant('198.51.100.66', { nat: { host: '198.51.100.9', port: 22, local: false } }) },
  };
  const out = {};
  for (const [name, req] of Object.entries(cases)) out[name] = await ask(req);
  process.stdout.write(`FORGE ${JSON.stringify(out)}\n`);
  process.send({ t: 'ready', fields: { listen: [] } });
}

process.on('message', (m) => {
  if (m?.t === 'res') { pending.get(m.id)?.({ ok: m.ok, error: m.error }); pending.delete(m.id); }
  else if (m?.t === 'config') void forge(m.cfg);
  else if (m?.t === 'stop') process.exit(0);
});
process.on('disconnect', () => process.exit(0));
setTimeout(() => process.exit(3), 20_000).unref();
