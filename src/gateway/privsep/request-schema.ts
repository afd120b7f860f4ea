// Privilege separation (issue 9, docs/privsep.md): the shape of every request
// the worker may send the monitor, as a zod schema; validate.ts checks each
// one against it, then against the configuration. Its own module so that zod
// loads after the start's critical path (validate.ts, docs/startup.md).
import * as z from 'zod';
import { ipFamily } from '../../backends/grant-check.js';

export const MAX_COMMAND_BYTES = 1500;

// Built at the first request, not when the module loads.
function buildRequestSchema() {
  const ipLiteral = z.string().max(64).refine((s) => ipFamily(s) !== undefined, 'not an IP address literal');
  const port = z.number().int().min(1).max(65535);
  const seconds = z.number().finite().min(0);

  const natSchema = z.strictObject({
    host: z.string().max(64),
    port,
    local: z.boolean(),
    masquerade: z.boolean().optional(),
    snatAddress: ipLiteral.optional(),
  });

  const grantSchema = z.strictObject({
    address: ipLiteral,
    family: z.union([z.literal(4), z.literal(6)]),
    proto: z.enum(['tcp', 'udp']),
    port,
    expiresAt: z.number().finite(),
    timeoutSec: seconds,
    clientTimeoutSec: seconds,
    rule: z.string().min(1).max(256),
    nat: natSchema.optional(),
    packetSource: ipLiteral.optional(),
    destination: ipLiteral.optional(),
    prefix: z.number().int().min(0).max(128).optional(),
  });

  const backendName = z.string().min(1).max(300);
  const id = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

  const requestSchema = z.discriminatedUnion('op', [
    z.strictObject({ t: z.literal('req'), id, op: z.literal('init'), backend: backendName }),
    z.strictObject({ t: z.literal('req'), id, op: z.literal('list'), backend: backendName }),
    z.strictObject({ t: z.literal('req'), id, op: z.literal('shutdown'), backend: backendName }),
    z.strictObject({ t: z.literal('req'), id, op: z.literal('open'), backend: backendName, grant: grantSchema }),
    z.strictObject({ t: z.literal('req'), id, op: z.literal('close'), backend: backendName, grant: grantSchema }),
    z.strictObject({ t: z.literal('req'), id, op: z.literal('command'), rule: z.string().min(1).max(256), command: z.string().min(1).max(MAX_COMMAND_BYTES) }),
  ]);
  return requestSchema;
}
let requestSchemaOnce: ReturnType<typeof buildRequestSchema> | undefined;
export const requestSchema = (): ReturnType<typeof buildRequestSchema> => (requestSchemaOnce ??= buildRequestSchema());

export type Request = z.infer<ReturnType<typeof buildRequestSchema>>;

