// Browser stand-in for node:net's isIPv4/isIPv6 as the SPA codec uses them:
// strict dotted quads (no leading zeros, which libc would read as octal) and
// IPv6 text forms (RFC 4291 2.2, with an optional IPv4 tail; zones are left to
// the codec, which refuses them).
const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])';
const V4 = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const GROUP = /^[0-9A-Fa-f]{1,4}$/;

export function isIPv4(text: string): boolean {
  return V4.test(text);
}

function groupsOk(part: string, max: number): number | undefined {
  if (part === '') return 0;
  const groups = part.split(':');
  if (groups.length > max || !groups.every((g) => GROUP.test(g))) return undefined;
  return groups.length;
}

export function isIPv6(text: string): boolean {
  let s = text;
  const pct = s.indexOf('%');
  if (pct !== -1) {
    if (pct === s.length - 1) return false;
    s = s.slice(0, pct);
  }
  const lastColon = s.lastIndexOf(':');
  if (lastColon !== -1 && s.slice(lastColon + 1).includes('.')) {
    if (!isIPv4(s.slice(lastColon + 1))) return false;
    s = s.slice(0, lastColon + 1) + '0:0';
  }
  const dbl = s.indexOf('::');
  if (dbl === -1) return groupsOk(s, 8) === 8;
  if (s.indexOf('::', dbl + 1) !== -1) return false;
  const head = groupsOk(s.slice(0, dbl), 7);
  const rest = groupsOk(s.slice(dbl + 2), 7);
  return head !== undefined && rest !== undefined && head + rest <= 7;
}

export function isIP(text: string): 0 | 4 | 6 {
  return isIPv4(text) ? 4 : isIPv6(text) ? 6 : 0;
}
