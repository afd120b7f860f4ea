// --wait: after a knock, probe the first requested TCP port until it accepts a
// connection or the bound runs out, so a failed knock is never silent.
import net from 'node:net';

function tryConnect(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => { s.destroy(); resolve(false); }, timeoutMs);
    s.once('connect', () => { clearTimeout(t); s.destroy(); resolve(true); });
    s.once('error', () => { clearTimeout(t); resolve(false); });
  });
}

/** Milliseconds until the port accepted a connection, or -1 when the bound ran out. */
export async function waitForTcp(host: string, port: number, boundMs: number, intervalMs = 20): Promise<number> {
  const t0 = Date.now();
  for (let attempt = 0; attempt < 10_000; attempt++) {
    const left = boundMs - (Date.now() - t0);
    if (left <= 0) break;
    // Short attempts: a SYN the guard dropped would otherwise wait a whole retransmit interval.
    if (await tryConnect(host, port, Math.min(left, 250))) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, Math.min(intervalMs, Math.max(0, boundMs - (Date.now() - t0)))));
  }
  return -1;
}
