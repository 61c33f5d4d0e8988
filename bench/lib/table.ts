// Plain-text tables for the data-path bench: figures per target, ratios against passthrough_ll and
// the bare directory, the goal for dirvisor, and CPU time per operation.
import type { Phase, PhaseResult } from './workloads.js';
import type { TargetName } from './config.js';

export interface CpuSample {
  /** CPU seconds used during the phase, per serving process name. */
  byProc: Record<string, number>;
}

export type Outcome = (PhaseResult & { cpu: CpuSample }) | { error: string };

/** results[phaseId][target] */
export type BackingResults = Record<string, Partial<Record<TargetName, Outcome>>>;

const ok = (o: Outcome | undefined): o is PhaseResult & { cpu: CpuSample } => !!o && !('error' in o);

export function fmtNum(v: number): string {
  if (!Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  if (a >= 10_000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

/**
 * How `a` compares with the reference `b`: for rates a percentage of the reference's rate; for
 * times a multiple of the reference's time. Either way "is the goal met" reads off directly.
 */
export function ratio(a: number, b: number, higherBetter: boolean): { value: number; text: string } {
  const value = a / b;
  if (!Number.isFinite(value)) return { value, text: '-' };
  if (higherBetter) return { value, text: value >= 10 ? `${Math.round(value)}×` : `${Math.round(value * 100)}%` };
  return { value, text: `${value.toFixed(2)}×` };
}

function render(headers: string[], rows: string[][], leftCols = 1): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < leftCols ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function resultsTable(phases: Phase[], results: BackingResults, targets: TargetName[]): string {
  const has = (t: TargetName) => targets.includes(t);
  const headers = ['workload', 'unit', ...targets];
  const pairs: [TargetName, TargetName, string][] = [];
  if (has('dirvisor') && has('passthrough_ll')) pairs.push(['dirvisor', 'passthrough_ll', 'dv/pt']);
  if (has('dirvisor')) pairs.push(['dirvisor', 'bare', 'dv/bare']);
  if (has('passthrough_ll')) pairs.push(['passthrough_ll', 'bare', 'pt/bare']);
  if (has('sshfs') && has('passthrough_ll')) pairs.push(['sshfs', 'passthrough_ll', 'ssh/pt']);
  if (has('sshfs')) pairs.push(['sshfs', 'bare', 'ssh/bare']);
  headers.push(...pairs.map((p) => p[2]));
  const withGoal = has('dirvisor') && has('passthrough_ll');
  if (withGoal) headers.push('dv goal');
  const rows = phases.map((ph) => {
    const r = results[ph.id] ?? {};
    const row = [ph.label, ph.unit];
    for (const t of targets) {
      const o = r[t];
      row.push(o === undefined ? 'skip' : ok(o) ? fmtNum(o.value) + (o.note ? '!' : '') : 'FAIL');
    }
    for (const [a, b] of pairs) {
      const oa = r[a];
      const ob = r[b];
      row.push(ok(oa) && ok(ob) ? ratio(oa.value, ob.value, ph.higherBetter).text : '-');
    }
    if (withGoal) {
      const oa = r.dirvisor;
      const ob = r.passthrough_ll;
      if (!ph.goal) row.push('');
      else if (!ok(oa) || !ok(ob)) row.push(`${ph.goal.text} ?`);
      else {
        const v = oa.value / ob.value;
        const met = ph.goal.min !== undefined ? v >= ph.goal.min : v <= ph.goal.max!;
        row.push(`${ph.goal.text} ${met ? 'met' : 'MISSED'}`);
      }
    }
    return row;
  });
  return render(headers, rows, 2);
}

/** CPU time per operation (or per MiB) of the serving processes, for the phases that ask for it. */
export function cpuTable(phases: Phase[], results: BackingResults, targets: TargetName[]): string {
  const cols: { title: string; target: TargetName; procs: string[] }[] = [];
  if (targets.includes('dirvisor')) {
    cols.push({ title: 'dv host', target: 'dirvisor', procs: ['dirvisor-host'] });
    cols.push({ title: 'dv guest', target: 'dirvisor', procs: ['dirvisor-guest'] });
    cols.push({ title: 'dv total', target: 'dirvisor', procs: ['dirvisor-host', 'dirvisor-guest'] });
  }
  if (targets.includes('passthrough_ll')) cols.push({ title: 'passthrough_ll', target: 'passthrough_ll', procs: ['passthrough_ll'] });
  if (targets.includes('sshfs')) cols.push({ title: 'sshfs (client only)', target: 'sshfs', procs: ['sshfs'] });
  const rows: string[][] = [];
  for (const ph of phases) {
    if (!ph.cpu) continue;
    const r = results[ph.id] ?? {};
    const scale = ph.cpu.per === 'op' ? 1e6 : 1e3;
    const row = [ph.cpu.label, ph.cpu.per === 'op' ? 'µs/op' : 'ms/MiB'];
    for (const c of cols) {
      const o = r[c.target];
      if (!ok(o)) {
        row.push('-');
        continue;
      }
      const secs = c.procs.reduce((a, p) => a + (o.cpu.byProc[p] ?? NaN), 0);
      row.push(fmtNum((secs / o.units) * scale));
    }
    rows.push(row);
  }
  return render(['CPU per unit', 'unit', ...cols.map((c) => c.title)], rows, 2);
}
