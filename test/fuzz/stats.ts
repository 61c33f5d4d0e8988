// What a fuzz run counts and what it found. A finding is anything the product must not do: crash,
// hang, leave a request unanswered, close a session over a well-formed frame, reject with something
// other than an FsError, let memory grow without bound. Each keeps its first reproducer.
import fs from 'node:fs';
import path from 'node:path';

export interface Finding {
  side: 'host' | 'guest';
  kind: string;
  message: string;
  count: number;
  /** File with the bytes/operations that led to it, when there is one. */
  reproducer?: string;
  /** The fuzz session it happened on (the agent name of its Hello), when it is one. */
  session?: string;
}

export class FuzzStats {
  readonly counters = new Map<string, number>();
  /** Errors by errno name, per side (host: ErrorReply errnos; guest: FsError errnos of operations). */
  readonly errnos = { host: new Map<string, number>(), guest: new Map<string, number>() };
  readonly findings = new Map<string, Finding>();
  framesHost = 0;
  framesGuest = 0;
  /** Host reply latency by request kind: [count, total ms, max ms]. */
  readonly latency = new Map<string, [number, number, number]>();

  constructor(readonly outDir: string) {}

  inc(name: string, n = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + n);
  }

  get(name: string): number {
    return this.counters.get(name) ?? 0;
  }

  errno(side: 'host' | 'guest', name: string): void {
    const m = this.errnos[side];
    m.set(name, (m.get(name) ?? 0) + 1);
  }

  /**
   * Records a finding; `signature` groups repeats (only the first writes a reproducer).
   * `reproducer` is written lazily, so repeats cost nothing.
   */
  find(side: 'host' | 'guest', kind: string, message: string, signature = '', reproducer?: () => string | Buffer, ext = 'txt', session?: string): void {
    const key = `${side}:${kind}:${signature}`;
    const known = this.findings.get(key);
    if (known) {
      known.count++;
      return;
    }
    const f: Finding = { side, kind, message, count: 1, session };
    if (reproducer) {
      fs.mkdirSync(this.outDir, { recursive: true });
      f.reproducer = path.join(this.outDir, `${side}-${kind}-${this.findings.size + 1}.${ext}`);
      fs.writeFileSync(f.reproducer, reproducer());
    }
    this.findings.set(key, f);
  }

  lat(kind: string, ms: number): void {
    const l = this.latency.get(kind) ?? [0, 0, 0];
    l[0]++;
    l[1] += ms;
    l[2] = Math.max(l[2], ms);
    this.latency.set(kind, l);
  }

  /** The request kinds with the largest total time, for the report. */
  slowest(n = 8): string {
    return [...this.latency.entries()]
      .sort((a, b) => b[1][1] - a[1][1])
      .slice(0, n)
      .map(([k, [c, t, m]]) => `${k}: ${c} x avg ${(t / c).toFixed(1)} ms, max ${m.toFixed(0)} ms`)
      .join('; ');
  }

  get totalFrames(): number {
    return this.framesHost + this.framesGuest;
  }
}

export function formatCounts(m: Map<string, number>, limit = 40): string {
  const rows = [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, limit);
  return rows.length ? rows.map(([k, v]) => `${k}=${v}`).join(' ') : '(none)';
}
