// RouterOS time values: what the router prints (`1m30s`, `2h`, `1w2d3h4m5s`,
// `00:01:30`, `1d02:03:04`, `500ms`) and what sesame sends (`30s`, `1m30s`).
// Spec: /work/shared/docs/routeros.md sections 2.9 and 4.3.

/** Well below RouterOS's largest time value (about 35w3d13:13:56). */
export const MAX_ROUTEROS_TIMEOUT_SEC = 30 * 86400;

const UNIT_SECONDS: Record<string, number> = { w: 604800, d: 86400, h: 3600, m: 60, s: 1, ms: 0.001, us: 0.000001 };

/**
 * Parse a RouterOS duration into seconds (may be fractional). Returns
 * undefined for anything that is not a duration, so callers decide how to
 * report it.
 */
export function parseRouterosDuration(text: string): number | undefined {
  const s = text.trim().toLowerCase();
  if (s === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  // Optional unit part followed by an optional clock part: "1w2d", "1d02:03:04", "00:01:30.5".
  const m = /^((?:\d+(?:\.\d+)?(?:w|d|h|ms|us|m|s)\s*)*)(?:(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?))?$/.exec(s);
  if (!m) return undefined;
  const [, units = '', hh, mm, ss] = m;
  if (units === '' && hh === undefined) return undefined;
  let total = 0;
  for (const part of units.matchAll(/(\d+(?:\.\d+)?)(w|d|h|ms|us|m|s)/g)) {
    total += Number(part[1]) * UNIT_SECONDS[part[2]!]!;
  }
  if (hh !== undefined) {
    if (Number(mm) > 59 || Number(ss) >= 60) return undefined;
    total += Number(hh) * 3600 + Number(mm) * 60 + Number(ss);
  }
  return total;
}

/** Whole seconds in the compact unit form RouterOS accepts: `30s`, `1m30s`, `1d2h3m4s`. */
export function formatRouterosDuration(seconds: number): string {
  let rest = Math.max(0, Math.round(seconds));
  if (rest === 0) return '0s';
  let out = '';
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}
