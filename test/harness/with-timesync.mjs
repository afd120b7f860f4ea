// Runs a command where /run/systemd/timesync/synchronized exists (the flag
// systemd-timesyncd leaves when the clock is synchronized), for the doctor's
// clean-setup test on machines without a time service. Only inside a private
// mount namespace made for it (`unshare --mount --propagation private`): the
// tmpfs mounted here is invisible to the host and gone with the process.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readlinkSync, writeFileSync } from 'node:fs';

// unshare and ip netns exec exec() in place, so the parent is the test runner, in the host's mount namespace.
if (readlinkSync('/proc/self/ns/mnt') === readlinkSync(`/proc/${process.ppid}/ns/mnt`)) {
  process.stderr.write('with-timesync: refusing to mount in the caller\'s mount namespace; run under unshare --mount --propagation private\n');
  process.exit(2);
}
const target = existsSync('/run/systemd') ? '/run/systemd' : '/run';
execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', target]);
mkdirSync('/run/systemd/timesync', { recursive: true });
writeFileSync('/run/systemd/timesync/synchronized', '');
const [cmd, ...args] = process.argv.slice(2);
const r = spawnSync(cmd, args, { stdio: 'inherit', timeout: 60_000 });
process.exit(r.status ?? 1);
