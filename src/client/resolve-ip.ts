// -R/--resolve-ip-https: ask a "what is my IP" URL for this host's public
// address (fwknop's default is cipherdyne.org's myip script; --resolve-url
// picks another). The first IP address in the reply body is used.
import { isIPv4, isIPv6 } from '../spa/message.js';

export async function resolveExternalIp(url: string, timeoutMs = 10_000): Promise<string> {
  let u: URL;
  try { u = new URL(url); } catch { throw new Error(`--resolve-url: "${url}" is not a URL`); }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error(`--resolve-url: "${url}" must be an http(s) URL`);
  let body: string;
  try {
    const res = await fetch(u, { signal: AbortSignal.timeout(timeoutMs), headers: { 'user-agent': 'sesame' } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    body = (await res.text()).slice(0, 4096);
  } catch (e) {
    throw new Error(`-R: could not get this host's address from ${u.origin}: ${(e as Error).message} (use -a IP instead)`);
  }
  for (const token of body.split(/[^0-9A-Fa-f.:]+/)) {
    if (isIPv4(token) || isIPv6(token)) return token;
  }
  throw new Error(`-R: ${u.origin} did not return an IP address (use -a IP instead)`);
}
