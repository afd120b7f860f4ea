// A decoded SPA message as the JSON object `sesame decode` and `knock -T -v` print.
import type { SpaMessage } from '../spa/message.js';

const TYPE_NAMES = ['command', 'access', 'nat_access', 'client_timeout_access', 'client_timeout_nat_access', 'local_nat_access', 'client_timeout_local_nat_access'];

export function describeMessage(m: SpaMessage): Record<string, unknown> {
  return {
    username: m.username,
    timestamp: m.timestamp,
    version: m.version,
    message_type: m.type,
    message_type_name: TYPE_NAMES[m.type],
    ...(m.request.kind === 'access' ? { access: m.message, allow_ip: m.request.allowIp, ports: m.request.ports.map((p) => `${p.proto}/${p.port}`) }
      : { command: m.request.command, allow_ip: m.request.allowIp }),
    nat_access: m.nat ? `${m.nat.host},${m.nat.port}` : null,
    server_auth: m.serverAuth ?? null,
    client_timeout: m.clientTimeout ?? null,
    digest_type: m.digestType,
    random: m.random,
  };
}
