// Reads a door file in either format: sesame YAML (a top-level `doors:` list)
// or knockd.conf ([options] and [door] sections). The format is chosen by the
// file name (.yaml/.yml) and otherwise by the first meaningful line.
import { readFile } from 'node:fs/promises';
import { ConfigError } from '../config/model.js';
import type { DoorSet } from './door.js';
import { parseDoorsYaml } from './doors-yaml.js';
import { parseKnockdConf, type KnockdConfOptions } from './knockd-conf.js';

export type DoorFileFormat = 'yaml' | 'knockd';

export function detectDoorFormat(file: string, text: string): DoorFileFormat {
  if (/\.ya?ml$/i.test(file)) return 'yaml';
  if (/\.conf$/i.test(file)) return 'knockd';
  const first = text.split(/\r?\n/).map((l) => l.trim()).find((l) => l !== '' && !l.startsWith('#'));
  return first !== undefined && first.startsWith('[') && first.endsWith(']') ? 'knockd' : 'yaml';
}

export function parseDoorText(text: string, file: string, opts: KnockdConfOptions = {}): DoorSet {
  return detectDoorFormat(file, text) === 'yaml' ? parseDoorsYaml(text, file) : parseKnockdConf(text, file, opts);
}

export async function readDoorFile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(file, undefined, undefined, `cannot read the door file (${code ?? String(e)}); check the path`);
  }
}

export async function loadDoorFile(file: string, opts: KnockdConfOptions = {}): Promise<DoorSet> {
  return parseDoorText(await readDoorFile(file), file, opts);
}
