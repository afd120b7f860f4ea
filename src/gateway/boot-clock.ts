// Deadlines that survive a restart of the daemon and a step of the wall
// clock (issue 10 item 4). CLOCK_MONOTONIC (process.hrtime on Linux) counts
// from boot and never steps; together with the kernel's boot id it tells a
// restarted daemon how long a journaled grant really has left, whatever the
// wall clock did meanwhile. After a reboot the firewall is empty anyway, and
// the wall-clock expiry date is all there is.
import { readFileSync } from 'node:fs';

let cachedBoot: string | undefined | null = null;

/** The kernel's id of this boot, or undefined where there is none. */
export function bootId(): string | undefined {
  if (cachedBoot === null) {
    try { cachedBoot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined; } catch { cachedBoot = undefined; }
  }
  return cachedBoot;
}

/** Milliseconds on CLOCK_MONOTONIC (since boot on Linux). */
export const monoNowMs = (): number => Number(process.hrtime.bigint() / 1_000_000n);

/** A deadline on both clocks for an expiry date given on the wall clock now. */
export interface BootDeadline { boot?: string; monoEnd: number }
export function deadlineFor(expiresAtWall: number, wallNow: number): BootDeadline {
  const b = bootId();
  return { ...(b ? { boot: b } : {}), monoEnd: monoNowMs() + (expiresAtWall - wallNow) };
}

/** The wall-clock expiry a journaled deadline means now: from the monotonic clock within the same boot, else as written. */
export function wallExpiry(expiresAtWall: number, d: Partial<BootDeadline>, wallNow: number): number {
  if (d.monoEnd === undefined || d.boot === undefined || d.boot !== bootId()) return expiresAtWall;
  return wallNow + (d.monoEnd - monoNowMs());
}
