// Suites that need root or system tools declare it here. A missing requirement
// skips the suite with a loud warning, except under CI=true, where the skip
// itself fails the run (CI must never pass by skipping).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'vitest';

const SBIN = ['/usr/sbin', '/sbin', '/usr/bin', '/bin', '/usr/local/bin', '/usr/local/sbin'];

export function findTool(name: string): string | undefined {
  for (const dir of SBIN) {
    const p = `${dir}/${name}`;
    if (existsSync(p)) return p;
  }
  return undefined;
}

export type Requirement = 'root' | 'netns' | string;

export function missingRequirements(reqs: Requirement[]): string[] {
  const missing: string[] = [];
  for (const r of reqs) {
    if (r === 'root') {
      if (process.getuid?.() !== 0) missing.push('root');
    } else if (r === 'netns') {
      if (process.getuid?.() !== 0 || !findTool('ip')) missing.push('netns (root + iproute2)');
      else {
        try { execFileSync(findTool('ip')!, ['netns', 'list'], { stdio: 'ignore' }); }
        catch { missing.push('netns (ip netns list failed)'); }
      }
    } else if (!findTool(r)) {
      missing.push(r);
    }
  }
  return missing;
}

/** describe() that skips loudly when requirements are missing, and fails under CI=true. */
export function describeWith(name: string, reqs: Requirement[], fn: () => void): void {
  const missing = missingRequirements(reqs);
  if (missing.length === 0) {
    describe(name, fn);
    return;
  }
  const why = `missing ${missing.join(', ')} (run scripts/install-test-deps.sh as root)`;
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('has what it needs (CI=true forbids skipping)', () => {
        throw new Error(`suite "${name}" cannot run: ${why}`);
      });
    });
    return;
  }
  process.stderr.write(`\n*** SKIPPING suite "${name}": ${why} ***\n\n`);
  describe.skip(name, fn);
}
