// `sesame knockd ...`: classic port-knock doors compiled into firewall rules.
// Logic lives in src/knockd/ (compile.ts); this file only wires commander.
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { compileDoorFile } from '../knockd/compile.js';

interface CompileFlags {
  nftables?: string;
  routeros?: string;
  open?: string;
  openFor?: string;
  table: string;
  listTemplate?: string;
  wanList?: string;
  placeBefore?: string;
  placeBefore6?: string;
  ipv6: boolean;
  output?: string;
}

export function registerKnockd(program: Command): void {
  const knockd = program
    .command('knockd')
    .description('classic port-knock doors (knockd.conf or sesame YAML "doors:") compiled into in-kernel firewall rules');

  knockd
    .command('compile')
    .description('print an nftables ruleset (for nft -f -) or a RouterOS script (for /import) implementing the doors of FILE')
    .option('--nftables <file>', 'compile this door file (sesame YAML or knockd.conf) to an nftables ruleset')
    .option('--routeros <file>', 'compile this door file to a RouterOS .rsc script')
    .option('--open <ports>', 'knockd.conf: ports to open (tcp/N[,udp/M]) for doors whose command names none')
    .option('--open-for <seconds>', 'knockd.conf: grant lifetime for every door (default: cmd_timeout)')
    .option('--table <name>', "nftables: table name (family inet); not the daemon's table (sesame)", 'sesame_doors')
    .option('--list-template <template>', 'RouterOS: address list of a grant ({proto} {protonum} {port})', 'sesame_{proto}_{port}')
    .option('--wan-list <name>', "RouterOS: in-interface-list knocks arrive on ('' = any interface)", 'WAN')
    .option('--place-before <comment>', "RouterOS: IPv4 input rule to insert before ('' = append)")
    .option('--place-before6 <comment>', "RouterOS: IPv6 input rule to insert before ('' = append)")
    .option('--no-ipv6', 'RouterOS: IPv4 rules only')
    .option('-o, --output <file>', 'write to this file instead of standard output')
    .action(async (flags: CompileFlags) => {
      if ((flags.nftables === undefined) === (flags.routeros === undefined)) {
        throw new Error('knockd compile: give exactly one of --nftables FILE or --routeros FILE');
      }
      const { output, warnings } = await compileDoorFile({
        target: flags.nftables !== undefined ? 'nftables' : 'routeros',
        file: (flags.nftables ?? flags.routeros)!,
        open: flags.open,
        openFor: flags.openFor,
        table: flags.table,
        routeros: {
          listTemplate: flags.listTemplate,
          wanList: flags.wanList,
          placeBefore4: flags.placeBefore,
          placeBefore6: flags.placeBefore6,
          ipv6: flags.ipv6,
        },
      });
      for (const w of warnings) process.stderr.write(`sesame: warning: ${w}\n`);
      if (flags.output) await writeFile(flags.output, output, { mode: 0o644 });
      else process.stdout.write(output);
    });
}
