// Address-list names per guarded service, from a template: `{proto}` (tcp/udp),
// `{protonum}` (6/17), `{port}`. `FWKNOP_{protonum}_{port}` reproduces the
// lists of the mikrotik-fwknop-pi setup (FWKNOP_6_22).
// Spec: /work/shared/docs/routeros.md 1.4, 4.1.
import type { Proto } from '../../spa/types.js';
import { RouterConfigError } from './target.js';

export const DEFAULT_LIST_TEMPLATE = 'sesame_{proto}_{port}';

const PROTO_NUM: Record<Proto, number> = { tcp: 6, udp: 17 };

/** Refuse templates that cannot name one list per service or would produce odd RouterOS names. */
export function validateListTemplate(template: string): void {
  const bare = template.replace(/\{(proto|protonum|port)\}/g, '');
  if (/[{}]/.test(bare)) {
    throw new RouterConfigError(`list_template "${template}": unknown placeholder; use {proto}, {protonum} and {port}`);
  }
  if (!template.includes('{port}')) {
    throw new RouterConfigError(`list_template "${template}" must contain {port} (one list per service), e.g. ${DEFAULT_LIST_TEMPLATE}`);
  }
  if (!/\{proto(num)?\}/.test(template)) {
    throw new RouterConfigError(`list_template "${template}" must contain {proto} or {protonum}, or tcp and udp services would share a list`);
  }
  if (!/^[A-Za-z0-9_.:-]*$/.test(bare)) {
    throw new RouterConfigError(`list_template "${template}": use only letters, digits and _ . : - around the placeholders`);
  }
}

export function listName(template: string, proto: Proto, port: number): string {
  return template
    .replace(/\{protonum\}/g, String(PROTO_NUM[proto]))
    .replace(/\{proto\}/g, proto)
    .replace(/\{port\}/g, String(port));
}

/** Inverse of listName: which service a list name belongs to, or undefined for foreign lists. */
export function parseListName(template: string, name: string): { proto: Proto; port: number } | undefined {
  const groups: string[] = [];
  const re = template.replace(/\{(proto|protonum|port)\}|[^{]+/g, (m, ph: string | undefined) => {
    if (!ph) return m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    groups.push(ph);
    return ph === 'proto' ? '(tcp|udp)' : ph === 'protonum' ? '(6|17)' : '(\\d{1,5})';
  });
  const m = new RegExp(`^${re}$`).exec(name);
  if (!m) return undefined;
  let proto: Proto | undefined;
  let port: number | undefined;
  for (let i = 0; i < groups.length; i++) {
    const v = m[i + 1]!;
    const g = groups[i];
    const p: Proto | undefined = g === 'proto' ? (v as Proto) : g === 'protonum' ? (v === '6' ? 'tcp' : 'udp') : undefined;
    if (p) {
      if (proto && proto !== p) return undefined;
      proto = p;
    } else {
      const n = Number(v);
      if (port !== undefined && port !== n) return undefined;
      port = n;
    }
  }
  if (!proto || port === undefined || port < 1 || port > 65535) return undefined;
  return { proto, port };
}
