// How the CLI turns failures into one line and an exit code.
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** Errors whose message is meant for the user as is (config, options, codec input). */
export function isUserFacing(e: unknown): e is Error {
  return e instanceof Error && ['UsageError', 'KnockOptionError', 'SpaInputError', 'ConfigError', 'RouterConfigError', 'RouterosError', 'WebLinkError', 'ControlError', 'UserError'].includes(e.name);
}
