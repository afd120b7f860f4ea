// access.conf (fwknop 2.6.10) read into AccessRule[]. Spec: fwknop-protocol.md
// 6.1 (syntax), 6.2 (directives), 4 (how stanzas are used). As fwknopd:
// - every SOURCE line starts a stanza; lines before the first SOURCE of a file
//   are ignored (sesame warns); each file has its own current stanza, so an
//   included file never adds to the includer's stanza, but the includer's
//   stanza continues after the %include line;
// - `%include FILE` nests at most 3 files deep; `%include_folder DIR` reads
//   DIR's *.conf files (sorted by name here; fwknopd uses readdir order);
//   `%include_keys FILE` inside a stanza reads only key/GPG variables from
//   FILE, and a stanza left without a key by it is dropped;
// - a stanza is validated when the next SOURCE of its file or the file's end
//   is reached: it needs a key, the HMAC key must differ from the key,
//   FORCE_SNAT/FORCE_MASQUERADE need FORCE_NAT or FORWARD_ALL, command
//   cycles need both commands and a timer; legacy mode truncates keys to 16.
// Sesame additions: keys longer than 32 bytes (HMAC: 128) and port 0 in port
// lists (fwknopd takes it; nothing can use it) are refused at load;
// `__CHANGEME__` is refused even with trailing blanks; GPG-only stanzas are
// skipped with a warning; directives sesame does not implement are named in
// the warnings. Relative include paths resolve against the including file's
// directory (fwknopd: its working directory, normally /).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, DEFAULTS, type AccessRule, type CommandCycle, type NatPolicy } from './model.js';
import { parseAddressList, parseIPv4, parsePortList } from './address.js';
import { scanServerLines, stripNameColon, type FwknopEntry } from './fwknop-lines.js';
import { cStrtol, decodeFwknopBase64, fwknopYes, isFwknopBase64Text, quote, trailingBlankHint } from './values.js';
import { DIGEST_TYPES, ENCRYPTION_MODES, type EncryptionMode, type HmacType } from '../spa/types.js';

/** The fwknopd.conf NAT switches every rule inherits. */
export type GlobalNat = Pick<NatPolicy, 'forwarding' | 'localNat' | 'snat' | 'snatAddress'>;

export interface AccessConfOptions {
  /** From fwknopd.conf; FORCE_NAT/FORCE_SNAT need forwarding or local NAT (fwknopd refuses otherwise). */
  nat?: GlobalNat;
}

export interface AccessConf {
  rules: AccessRule[];
  /** Every file read, in order (the access file, includes, key files). */
  files: string[];
  warnings: string[];
}

const MAX_INCLUDE_DEPTH = 3;
const MAX_KEY_BYTES = 32;
const MAX_HMAC_KEY_BYTES = 128;
const LEGACY_KEY_BYTES = 16;
const MAX_TIMEOUT = 2 << 22;
const CMD_CYCLE_MAX_CHARS = 255;

const GPG_DIRECTIVES = [
  'GPG_HOME_DIR', 'GPG_EXE', 'GPG_DECRYPT_ID', 'GPG_DECRYPT_PW', 'GPG_ALLOW_NO_PW', 'GPG_REQUIRE_SIG',
  'GPG_DISABLE_SIG', 'GPG_IGNORE_SIG_VERIFY_ERROR', 'GPG_REMOTE_ID', 'GPG_FINGERPRINT_ID',
];
const CMD_EXEC_IDENTITY_DIRECTIVES = ['ENABLE_CMD_SUDO_EXEC', 'CMD_EXEC_USER', 'CMD_EXEC_GROUP', 'CMD_SUDO_EXEC_USER', 'CMD_SUDO_EXEC_GROUP'];
const KEY_FILE_DIRECTIVES = ['KEY', 'KEY_BASE64', 'HMAC_KEY', 'HMAC_KEY_BASE64', 'GPG_DECRYPT_ID', 'GPG_DECRYPT_PW', 'GPG_ALLOW_NO_PW',
  'GPG_REQUIRE_SIG', 'GPG_DISABLE_SIG', 'GPG_IGNORE_SIG_VERIFY_ERROR', 'GPG_REMOTE_ID', 'GPG_FINGERPRINT_ID'];

/** Where a value was read: for messages. */
interface At { file: string; line: number }
interface Sourced<T> { value: T; at: At }

/** A stanza as directives arrive; turned into an AccessRule when it is complete. */
interface Stanza {
  number: number;
  at: At;
  source: string;
  destination?: Sourced<string>;
  openPorts?: Sourced<string>;
  restrictPorts?: Sourced<string>;
  key?: Sourced<Buffer>;
  hmacKey?: Sourced<Buffer>;
  hmacType?: HmacType;
  mode?: Sourced<EncryptionMode | 'asymmetric'>;
  accessTimeout: number;
  maxTimeout: number;
  expiresAtSec?: number;
  requireUsername?: string;
  requireSourceAddress: boolean;
  enableCmdExec: boolean;
  enableCmdSudoExec: boolean;
  cmdExecIdentity: Set<string>;
  cycleOpen?: Sourced<string>;
  cycleClose?: Sourced<string>;
  cycleTimer: number;
  forceNat?: { host: string; port: number };
  forceSnat?: string;
  forceSnatFlag: boolean;
  forceMasquerade: boolean;
  disableDnat: boolean;
  forwardAll: boolean;
  usesGpg: boolean;
  gpgDirectives: Set<string>;
  dropped: boolean;
  /** Set once the legacy truncation warning was given (validation may run more than once). */
  truncated: boolean;
}

/** Values are read as latin1 so key bytes stay exact; text values are turned back into UTF-8 strings. */
const asText = (v: string): string => Buffer.from(v, 'latin1').toString('utf8');

function newStanza(number: number, at: At, source: string): Stanza {
  return {
    number, at, source,
    accessTimeout: 0, maxTimeout: 0, requireSourceAddress: false, enableCmdExec: false, enableCmdSudoExec: false,
    cmdExecIdentity: new Set(), cycleTimer: 0, forceSnatFlag: false, forceMasquerade: false, disableDnat: false,
    forwardAll: false, usesGpg: false, gpgDirectives: new Set(), dropped: false, truncated: false,
  };
}

export function stanzaName(s: { number: number; at: At }): string {
  return `stanza #${s.number} (${s.at.file}:${s.at.line})`;
}

class AccessReader {
  readonly stanzas: Stanza[] = [];
  readonly files: string[] = [];
  readonly warnings: string[] = [];
  private readonly nat: GlobalNat;

  constructor(opts: AccessConfOptions) {
    this.nat = opts.nat ?? { forwarding: false, localNat: false, snat: false };
  }

  /** Read one file at include level `level` (1 = the access file itself). */
  readFile(file: string, level: number, from?: { at: At; directive: string }): void {
    const text = this.load(file, from);
    let current: Stanza | undefined;
    for (const l of scanServerLines(text)) {
      const at = { file, line: l.line };
      if (l.kind === 'invalid') {
        throw new ConfigError(file, l.line, undefined, invalidLineProblem(l.text));
      }
      const name = stripNameColon(l.name);
      const value = l.value;
      if (name === '%include') {
        if (level >= MAX_INCLUDE_DEPTH) {
          throw new ConfigError(file, l.line, '%include', `includes nest at most ${MAX_INCLUDE_DEPTH} files deep (fwknopd refuses deeper ones)`);
        }
        this.readFile(this.resolve(file, value), level + 1, { at, directive: '%include' });
      } else if (name === '%include_folder') {
        if (level >= MAX_INCLUDE_DEPTH) {
          throw new ConfigError(file, l.line, '%include_folder', `includes nest at most ${MAX_INCLUDE_DEPTH} files deep`);
        }
        this.readFolder(this.resolve(file, value), level + 1, { at, directive: '%include_folder' });
      } else if (name === 'SOURCE') {
        if (current) this.validate(current);
        current = newStanza(this.stanzas.length + 1, at, value);
        this.stanzas.push(current);
      } else if (!current) {
        this.warnings.push(`${file}:${l.line}: ${name} before the first SOURCE line is ignored (as fwknopd does)`);
      } else if (name === '%include_keys') {
        this.includeKeys(current, this.resolve(file, value), at);
        if (current.dropped) current = undefined;
      } else {
        this.apply(current, { ...l, name }, at);
      }
    }
    if (current) this.validate(current);
  }

  readFolder(dir: string, level: number, from?: { at: At; directive: string }): void {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (e) {
      const why = `cannot open folder ${quote(dir)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
      if (from) throw new ConfigError(from.at.file, from.at.line, from.directive, why);
      throw new ConfigError(dir, undefined, undefined, why);
    }
    // fwknopd takes a file when the text after its last '.' starts with "conf".
    const confs = names.filter((n) => /\.conf[^.]*$/.test(n)).sort();
    for (const n of confs) this.readFile(path.join(dir, n), level, from);
  }

  private resolve(includer: string, target: string): string {
    return path.isAbsolute(target) ? target : path.join(path.dirname(includer), target);
  }

  private load(file: string, from?: { at: At; directive: string }): string {
    let data: Buffer;
    try {
      data = readFileSync(file);
      const mode = statSync(file).mode & 0o777;
      if ((mode & 0o077) !== 0) {
        this.warnings.push(`${file} is readable by group/others (mode ${mode.toString(8).padStart(4, '0')}) and holds keys: chmod 600 ${file}`);
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = `cannot read ${quote(file)}: ${code === 'ENOENT' ? 'no such file' : code ?? (e as Error).message}${trailingBlankHint(file)}`;
      if (from) throw new ConfigError(from.at.file, from.at.line, from.directive, why);
      throw new ConfigError(file, undefined, undefined, why);
    }
    this.files.push(file);
    return data.toString('latin1');
  }

  private includeKeys(stanza: Stanza, file: string, at: At): void {
    let text: string | undefined;
    try {
      text = this.load(file);
    } catch (e) {
      this.warnings.push(`${at.file}:${at.line}: %include_keys: ${(e as ConfigError).problem}`);
    }
    if (text !== undefined) {
      for (const l of scanServerLines(text)) {
        if (l.kind === 'invalid') throw new ConfigError(file, l.line, undefined, invalidLineProblem(l.text));
        const name = stripNameColon(l.name);
        if (KEY_FILE_DIRECTIVES.includes(name)) this.apply(stanza, { ...l, name }, { file, line: l.line });
        else this.warnings.push(`${file}:${l.line}: ${name} is not a key variable; %include_keys reads only keys, so it is ignored`);
      }
    }
    if (this.problem(stanza) !== undefined) {
      stanza.dropped = true;
      this.stanzas.splice(this.stanzas.indexOf(stanza), 1);
      this.warnings.push(`${stanzaName(stanza)}: no usable keys after %include_keys ${quote(file)}; the stanza is skipped (as fwknopd does)`);
    }
  }

  /** Apply one directive of a stanza. */
  private apply(s: Stanza, e: FwknopEntry, at: At): void {
    const { name, value } = e;
    const fail = (problem: string): never => {
      throw new ConfigError(at.file, at.line, name, problem);
    };
    const int = (min: number, max: number): number => {
      const { n, clean } = cStrtol(value);
      if (n < min || n > max) fail(`${quote(value)} is not in the range ${min}..${max}`);
      if (!clean) this.warnings.push(`${at.file}:${at.line}: ${name} ${quote(value)} is read as ${n} (fwknop reads the leading digits)`);
      return n;
    };
    const key = (base64: boolean): Buffer => {
      if (value.trim().toUpperCase() === '__CHANGEME__') {
        fail('is still the placeholder __CHANGEME__ (generate keys with "sesame keygen" or "fwknop --key-gen")');
      }
      if (!base64) {
        if (/[ \t]$/.test(value)) this.warnings.push(`${at.file}:${at.line}: ${name} ends with blanks, which fwknop 2.6.10 keeps as part of the key (2.6.11 strips them)`);
        return Buffer.from(value, 'latin1');
      }
      if (!isFwknopBase64Text(value)) fail(`is not base64 text (only A-Z a-z 0-9 + / = allowed)${trailingBlankHint(value)}`);
      return decodeFwknopBase64(value);
    };
    switch (name) {
      case 'DESTINATION': s.destination = { value, at }; break;
      case 'OPEN_PORTS': s.openPorts = { value, at }; break;
      case 'RESTRICT_PORTS': s.restrictPorts = { value, at }; break;
      case 'KEY': case 'KEY_BASE64': s.key = { value: key(name === 'KEY_BASE64'), at }; break;
      case 'HMAC_KEY': case 'HMAC_KEY_BASE64': s.hmacKey = { value: key(name === 'HMAC_KEY_BASE64'), at }; break;
      case 'HMAC_DIGEST_TYPE': {
        const t = DIGEST_TYPES.find((d) => d === value.toLowerCase());
        if (!t) return fail(`${quote(value)} is not one of ${DIGEST_TYPES.join(', ')}${trailingBlankHint(value)}`);
        s.hmacType = t;
        break;
      }
      case 'ENCRYPTION_MODE': {
        const v = value.toLowerCase();
        const mode = v === 'asymmetric' ? 'asymmetric' : ENCRYPTION_MODES.find((m) => m === v);
        if (!mode) return fail(`${quote(value)} is not one of CBC, CTR, CFB, OFB, ECB, legacy, Asymmetric${trailingBlankHint(value)}`);
        s.mode = { value: mode, at };
        break;
      }
      case 'FW_ACCESS_TIMEOUT': s.accessTimeout = int(0, MAX_TIMEOUT); break;
      case 'MAX_FW_TIMEOUT': s.maxTimeout = int(0, MAX_TIMEOUT); break;
      case 'ACCESS_EXPIRE': s.expiresAtSec = parseExpireDate(value, fail); break;
      case 'ACCESS_EXPIRE_EPOCH': {
        const { n } = cStrtol(value);
        if (n < 0) fail(`${quote(value)} is not epoch seconds`);
        s.expiresAtSec = n;
        break;
      }
      case 'REQUIRE_USERNAME':
        if (/[ \t]$/.test(value)) this.warnings.push(`${at.file}:${at.line}: REQUIRE_USERNAME ends with blanks, which fwknop 2.6.10 keeps: no user name will match`);
        s.requireUsername = asText(value);
        break;
      case 'REQUIRE_SOURCE_ADDRESS': case 'REQUIRE_SOURCE': s.requireSourceAddress = fwknopYes(value); break;
      case 'ENABLE_CMD_EXEC': s.enableCmdExec = fwknopYes(value); break;
      case 'ENABLE_CMD_SUDO_EXEC': s.enableCmdSudoExec = fwknopYes(value); s.cmdExecIdentity.add(name); break;
      case 'CMD_EXEC_USER': case 'CMD_EXEC_GROUP': case 'CMD_SUDO_EXEC_USER': case 'CMD_SUDO_EXEC_GROUP':
        s.cmdExecIdentity.add(name);
        break;
      case 'CMD_CYCLE_OPEN': s.cycleOpen = { value: asText(value), at }; break;
      case 'CMD_CYCLE_CLOSE': s.cycleClose = { value: asText(value), at }; break;
      case 'CMD_CYCLE_TIMER': s.cycleTimer = int(1, MAX_TIMEOUT); break;
      case 'FORCE_NAT': {
        this.requireNatEnabled(name, fail);
        const m = /^[ \t\n\v\f\r]*([^ \t\n\v\f\r]{1,15})[ \t\n\v\f\r]+([0-9]{1,5})/.exec(value);
        if (!m) return fail(`${quote(value)} is not "<IPv4> <port>"`);
        const port = Number(m[2]);
        if (port > 65535) fail(`port ${port} is not in 0..65535`);
        if (parseIPv4(m[1]!) === undefined) fail(`${quote(m[1]!)} is not an IPv4 address`);
        s.forceNat = { host: m[1]!, port };
        break;
      }
      case 'FORCE_SNAT': {
        this.requireNatEnabled(name, fail);
        const ip = value.trim().split(/[ \t]/)[0]!;
        if (parseIPv4(ip) === undefined) fail(`${quote(value)} is not an IPv4 address`);
        s.forceSnat = ip;
        s.forceSnatFlag = true;
        break;
      }
      case 'FORCE_MASQUERADE':
        s.forceMasquerade = fwknopYes(value);
        s.forceSnatFlag = s.forceMasquerade;
        break;
      case 'DISABLE_DNAT': s.disableDnat = fwknopYes(value); break;
      case 'FORWARD_ALL': s.forwardAll = fwknopYes(value); break;
      default:
        if (GPG_DIRECTIVES.includes(name)) {
          if (name === 'GPG_DECRYPT_PW' && value.trim().toUpperCase() === '__CHANGEME__') fail('is still the placeholder __CHANGEME__');
          if (name === 'GPG_DECRYPT_PW' || (name === 'GPG_ALLOW_NO_PW' && fwknopYes(value))) s.usesGpg = true;
          s.gpgDirectives.add(name);
        } else {
          this.warnings.push(`${at.file}:${at.line}: ${name} is not an access.conf directive; ignored (fwknopd ignores it too)`);
        }
    }
  }

  private requireNatEnabled(name: string, fail: (p: string) => never): void {
    if (!this.nat.forwarding && !this.nat.localNat) {
      fail('needs ENABLE_IPT_FORWARDING or ENABLE_IPT_LOCAL_NAT set to Y in fwknopd.conf (fwknopd refuses it otherwise)');
    }
  }

  /** fwknopd's stanza check: the first problem as [directive, message, where], or undefined. */
  private problem(s: Stanza): [string | undefined, string, At] | undefined {
    const hasKey = s.key !== undefined && s.key.value.length > 0;
    if (!hasKey && !s.usesGpg) return [undefined, `${stanzaName(s)} has no key (expected KEY or KEY_BASE64, and HMAC_KEY_BASE64)`, s.at];
    if (hasKey && s.hmacKey && s.hmacKey.value.length > 0 && keyBytes(s).equals(s.hmacKey.value)) {
      return ['HMAC_KEY', `the HMAC key must differ from the encryption key in ${stanzaName(s)}`, s.hmacKey.at];
    }
    if (s.forceSnatFlag && !s.forceNat && !s.forwardAll) {
      return [undefined, `${stanzaName(s)}: FORCE_SNAT/FORCE_MASQUERADE need FORCE_NAT or FORWARD_ALL`, s.at];
    }
    if (s.cycleOpen && !s.cycleClose) return ['CMD_CYCLE_OPEN', `needs CMD_CYCLE_CLOSE too (use NONE for no close command) in ${stanzaName(s)}`, s.cycleOpen.at];
    if (s.cycleClose && !s.cycleOpen) return ['CMD_CYCLE_CLOSE', `needs CMD_CYCLE_OPEN too in ${stanzaName(s)}`, s.cycleClose.at];
    if (s.cycleOpen && s.cycleClose) {
      if (!s.cycleClose.value.startsWith('NONE') && s.cycleTimer === 0) {
        return ['CMD_CYCLE_TIMER', `must be set (1..${MAX_TIMEOUT} seconds) for the command cycle of ${stanzaName(s)}`, s.cycleClose.at];
      }
      for (const c of [s.cycleOpen, s.cycleClose]) {
        if (Buffer.byteLength(c.value) > CMD_CYCLE_MAX_CHARS) return [undefined, `command is longer than ${CMD_CYCLE_MAX_CHARS} characters`, c.at];
      }
    }
    return undefined;
  }

  private validate(s: Stanza): void {
    const p = this.problem(s);
    if (p) throw new ConfigError(p[2].file, p[2].line, p[0], p[1]);
    if (s.key && s.mode?.value === 'legacy' && s.key.value.length > LEGACY_KEY_BYTES && !s.truncated) {
      s.truncated = true;
      this.warnings.push(`${stanzaName(s)}: legacy mode uses only the first ${LEGACY_KEY_BYTES} bytes of the key (fwknopd truncates it too)`);
    }
  }

  /** Turn validated stanzas into rules (after every file is read). */
  toRules(): AccessRule[] {
    const rules: AccessRule[] = [];
    for (const s of this.stanzas) {
      const rule = this.toRule(s);
      if (rule) rules.push(rule);
    }
    return rules;
  }

  private toRule(s: Stanza): AccessRule | undefined {
    const name = stanzaName(s);
    const hasKey = s.key !== undefined && s.key.value.length > 0;
    if (!hasKey || s.mode?.value === 'asymmetric') {
      this.warnings.push(`${name} uses GPG only, which sesame does not implement; the stanza is skipped`);
      return undefined;
    }
    if (s.gpgDirectives.size > 0) {
      this.warnings.push(`${name}: ${[...s.gpgDirectives].join(', ')} not implemented (sesame has no GPG); the stanza uses its Rijndael key only`);
    }
    const list = <T>(src: Sourced<string>, directive: string, parse: (v: string) => T): T => {
      try {
        return parse(src.value);
      } catch (e) {
        throw new ConfigError(src.at.file, src.at.line, directive, (e as Error).message);
      }
    };
    const sourceAt = { value: s.source, at: s.at };
    const key = keyBytes(s);
    if (key.length > MAX_KEY_BYTES) {
      throw new ConfigError(s.key!.at.file, s.key!.at.line, 'KEY', `the key is ${key.length} bytes; fwknop keys are 1..${MAX_KEY_BYTES} bytes`);
    }
    const hmacKey = s.hmacKey && s.hmacKey.value.length > 0 ? s.hmacKey.value : undefined;
    if (hmacKey && hmacKey.length > MAX_HMAC_KEY_BYTES) {
      throw new ConfigError(s.hmacKey!.at.file, s.hmacKey!.at.line, 'HMAC_KEY', `the HMAC key is ${hmacKey.length} bytes; at most ${MAX_HMAC_KEY_BYTES} are allowed`);
    }
    let enableCmdExec = s.enableCmdExec;
    if (s.cmdExecIdentity.size > 0) {
      const names = [...s.cmdExecIdentity].join(', ');
      if (enableCmdExec) {
        enableCmdExec = false;
        this.warnings.push(`${name}: ${names} not implemented; command execution is disabled for this stanza rather than running commands as root`);
      } else {
        this.warnings.push(`${name}: ${names} not implemented (and ENABLE_CMD_EXEC is off, so it has no effect)`);
      }
    }
    const accessTimeoutSec = s.accessTimeout >= 1 ? s.accessTimeout : DEFAULTS.accessTimeoutSec;
    const maxTimeoutSec = s.maxTimeout >= 1 ? s.maxTimeout : DEFAULTS.maxTimeoutSec;
    if (maxTimeoutSec < accessTimeoutSec) this.warnings.push(`${name}: MAX_FW_TIMEOUT (${maxTimeoutSec}) is below FW_ACCESS_TIMEOUT (${accessTimeoutSec})`);
    if (s.expiresAtSec !== undefined && s.expiresAtSec * 1000 < Date.now()) this.warnings.push(`${name} has already expired (ACCESS_EXPIRE); it never matches`);
    if (!hmacKey) this.warnings.push(`${name} has no HMAC key: its packets are not authenticated (add HMAC_KEY_BASE64)`);
    if (s.mode?.value === 'legacy' && hmacKey) this.warnings.push(`${name}: legacy mode with an HMAC key; fwknop clients refuse to build such packets`);

    const cmdCycle: CommandCycle | undefined = s.cycleOpen && s.cycleClose
      ? {
          open: s.cycleOpen.value,
          ...(s.cycleClose.value.startsWith('NONE') ? {} : { close: s.cycleClose.value }),
          timerSec: s.cycleTimer,
        }
      : undefined;
    const nat: NatPolicy = {
      forwarding: this.nat.forwarding,
      localNat: this.nat.localNat,
      snat: this.nat.snat,
      ...(this.nat.snatAddress !== undefined ? { snatAddress: this.nat.snatAddress } : {}),
      ...(s.forceNat ? { forceNat: s.forceNat } : {}),
      ...(s.forceSnat !== undefined ? { forceSnat: s.forceSnat } : {}),
      forceMasquerade: s.forceMasquerade,
      disableDnat: s.disableDnat,
      forwardAll: s.forwardAll,
    };
    return {
      name,
      sources: list(sourceAt, 'SOURCE', (v) => parseAddressList(v)),
      ...(s.destination ? { destinations: list(s.destination, 'DESTINATION', (v) => parseAddressList(v)) } : {}),
      key,
      encryptionMode: (s.mode?.value as EncryptionMode | undefined) ?? DEFAULTS.mode,
      ...(hmacKey ? { hmacKey } : {}),
      hmacType: s.hmacType ?? DEFAULTS.hmac,
      ...(s.openPorts ? { openPorts: list(s.openPorts, 'OPEN_PORTS', (v) => parsePortList(v)) } : {}),
      restrictPorts: s.restrictPorts ? list(s.restrictPorts, 'RESTRICT_PORTS', (v) => parsePortList(v)) : [],
      accessTimeoutSec,
      maxTimeoutSec,
      ...(s.expiresAtSec !== undefined ? { expiresAtSec: s.expiresAtSec } : {}),
      ...(s.requireUsername !== undefined ? { requireUsername: s.requireUsername } : {}),
      requireSourceAddress: s.requireSourceAddress,
      enableCmdExec,
      ...(cmdCycle ? { cmdCycle } : {}),
      nat,
    };
  }
}

/** Why a line is not `NAME value`, without repeating it (it may hold a key). */
export function invalidLineProblem(text: string): string {
  if (/^[ \t\v\f\r]*$/.test(text)) return 'the line holds only blanks (fwknopd refuses the file: delete the blanks)';
  if (/^[ \t]+[#;]/.test(text)) return 'a comment must have its \'#\' in the first column (fwknopd refuses the file)';
  return 'the line has a name but no value (expected "NAME value"; fwknopd refuses the file)';
}

/** The key as fwknopd uses it: legacy mode keeps only the first 16 bytes. */
function keyBytes(s: Stanza): Buffer {
  const key = s.key?.value ?? Buffer.alloc(0);
  return s.mode?.value === 'legacy' && key.length > LEGACY_KEY_BYTES ? key.subarray(0, LEGACY_KEY_BYTES) : key;
}

/** ACCESS_EXPIRE `MM/DD/YYYY` (sscanf "%2d/%2d/%4d" + mktime: local midnight, out-of-range days roll over). */
function parseExpireDate(value: string, fail: (p: string) => never): number {
  const m = /^\s*([+-]?\d{1,2})\/\s*([+-]?\d{1,2})\/\s*([+-]?\d{1,4})/.exec(value);
  if (!m) return fail(`${quote(value)} is not a date (expected MM/DD/YYYY)`);
  let month = Number(m[1]);
  const day = Number(m[2]);
  let year = Number(m[3]);
  if (month > 0) month -= 1;
  if (year > 1900) year -= 1900;
  else if (year < 100) year += 100;
  const d = new Date(2000, 0, 1, 0, 0, 0, 0);
  d.setFullYear(1900 + year, month, day);
  return Math.floor(d.getTime() / 1000);
}

function finish(reader: AccessReader): AccessConf {
  const rules = reader.toRules();
  if (reader.stanzas.length === 0) {
    throw new ConfigError(reader.files[0] ?? 'access.conf', undefined, 'SOURCE', 'no stanza found (expected at least one SOURCE line with a KEY)');
  }
  return { rules, files: reader.files, warnings: reader.warnings };
}

/** Read access.conf (and whatever it includes). */
export function parseAccessConf(file: string, opts: AccessConfOptions = {}): AccessConf {
  const reader = new AccessReader(opts);
  reader.readFile(file, 1);
  return finish(reader);
}

/** fwknopd's ACCESS_FOLDER / --access-folder: every *.conf file of a directory, each read like an access.conf. */
export function parseAccessFolder(dir: string, opts: AccessConfOptions = {}): AccessConf {
  const reader = new AccessReader(opts);
  reader.readFolder(dir, 1);
  if (reader.files.length === 0) throw new ConfigError(dir, undefined, undefined, 'the folder has no *.conf files');
  return finish(reader);
}
