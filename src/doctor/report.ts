// How doctor findings are shown to a person: one line per check,
// `ok|problem|warn  <check>: <what>[; fix: <what to do>]`, and the same
// host-firewall findings for `sesame up` (issue 9, deliverable 4).
import type { FirewallFinding } from './host-firewall.js';

export type Status = 'ok' | 'problem' | 'warn';

export interface CheckLine {
  status: Status;
  check: string;
  what: string;
  fix?: string;
  /** Multi-line text printed indented below the line (e.g. the sets-mode snippet). */
  detail?: string;
}

export function formatLine(l: CheckLine): string {
  return `${l.status.padEnd(7)} ${l.check}: ${oneLine(l.what)}${l.fix ? `; fix: ${oneLine(l.fix)}` : ''}`;
}

/** Findings and details never break the one-line shape. */
function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

export function formatReport(lines: CheckLine[]): string {
  const out: string[] = [];
  const shown = new Set<string>();
  for (const l of lines) {
    out.push(formatLine(l));
    if (l.detail && !shown.has(l.detail)) {
      shown.add(l.detail);
      out.push(...l.detail.trimEnd().split('\n').map((d) => `        ${d}`));
    }
  }
  return out.join('\n') + '\n';
}

export function firewallLines(findings: FirewallFinding[]): CheckLine[] {
  return findings.map((f) => ({
    status: f.severity,
    check: 'host_firewall',
    what: f.what,
    fix: f.fix,
    ...(f.snippet ? { detail: f.snippet } : {}),
  }));
}

/** What `sesame up` adds after its instructions when the host firewall gets in the way ('' when nothing). */
export function upFirewallText(findings: FirewallFinding[]): string {
  if (findings.length === 0) return '';
  const problems = findings.filter((f) => f.severity === 'problem').length;
  return [
    '',
    problems > 0 ? `WARNING: this host's own firewall defeats sesame (${problems} problem${problems === 1 ? '' : 's'}); knocks will fail until you fix it:` : 'Note: sesame cannot tell whether this host\'s firewall lets everything through:',
    formatReport(firewallLines(findings)).trimEnd(),
    'Run `sesame doctor` to check again.',
    '',
  ].join('\n');
}
