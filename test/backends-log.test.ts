// Log-only backend and the shared expiry timer (no root needed).
import { describe, expect, it } from 'vitest';
import { sleep } from './harness/netns.js';
import type { BackendLogger, Grant } from '../src/backends/backend.js';
import { createLogBackend } from '../src/backends/log.js';
import { ExpiryTimer } from '../src/backends/expiry.js';
import { createBackend } from '../src/backends/index.js';

interface LogLine { event: string; fields?: Record<string, unknown> }
function recorder(): BackendLogger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const rec = (event: string, fields?: Record<string, unknown>) => { lines.push({ event, fields }); };
  return { lines, info: rec, warn: rec, error: rec };
}

const grant = (address: string, port: number, ms: number, extra: Partial<Grant> = {}): Grant => ({
  address, family: address.includes(':') ? 6 : 4, proto: 'tcp', port, expiresAt: Date.now() + ms,
  timeoutSec: Math.round(ms / 1000), clientTimeoutSec: 0, rule: 'r1', ...extra,
});

describe('log backend', () => {
  it('logs open/refresh/close with every field, lists live grants, logs the close at expiry', async () => {
    const log = recorder();
    const b = createLogBackend(log);
    await b.init();
    await b.open(grant('198.51.100.2', 22, 60_000, { nat: { host: '198.51.100.130', port: 2222, local: false } }));
    await b.open(grant('198.51.100.2', 22, 60_000, { nat: { host: '198.51.100.130', port: 2222, local: false } }));
    await b.open(grant('2001:db8::2', 53, 300, { proto: 'udp' }));
    const opens = log.lines.filter((l) => l.event === 'log_backend_would_open');
    expect(opens).toHaveLength(3);
    expect(opens[0]!.fields).toMatchObject({ address: '198.51.100.2', proto: 'tcp', port: 22, rule: 'r1', refreshed: false, nat: { host: '198.51.100.130', port: 2222 } });
    expect(opens[1]!.fields).toMatchObject({ refreshed: true });
    expect((await b.list()).map((g) => g.port).sort()).toEqual([22, 53]);
    await sleep(500);
    expect((await b.list()).map((g) => g.port)).toEqual([22]);
    expect(log.lines.filter((l) => l.event === 'log_backend_would_close').map((l) => l.fields?.port)).toEqual([53]);
    await b.close((await b.list())[0]!);
    expect(await b.list()).toEqual([]);
    await expect(b.open(grant('not-an-ip', 22, 1000))).rejects.toThrow(/not an IPv4 or IPv6 address/);
    await b.shutdown();
  });

  it('is what createBackend gives for kind log', () => {
    expect(createBackend({ kind: 'log' }, recorder()).name).toBe('log');
    expect(createBackend({ kind: 'command', open: '/bin/true', timeoutMs: 1000 }, recorder()).expiresItself).toBe(false);
  });
});

describe('ExpiryTimer', () => {
  it('fires due entries in expiry order with one timer, honours cancel and reschedule', async () => {
    const fired: string[] = [];
    const t = new ExpiryTimer<string>((due) => { for (const e of due) fired.push(e.item); });
    const now = Date.now();
    t.schedule('a', now + 300, 'a');
    t.schedule('b', now + 100, 'b');
    t.schedule('c', now + 200, 'c');
    t.schedule('d', now + 150, 'd');
    t.cancel('d');
    t.schedule('a', now + 50, 'a2'); // moved earlier
    await sleep(400);
    expect(fired).toEqual(['a2', 'b', 'c']);
    expect(t.size).toBe(0);
    t.schedule('late', Date.now() + 50, 'late');
    t.stop();
    await sleep(120);
    expect(fired).toEqual(['a2', 'b', 'c']);
    expect(t.list().map((e) => e.key)).toEqual(['late']);
  });
});
