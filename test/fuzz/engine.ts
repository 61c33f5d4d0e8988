// A whole fuzz run: the host side against a real host agent (child process) serving a tmpfs, then
// the guest side against a fake host in this process. Used by `npm run fuzz` (run.ts) and by the
// short fixed-seed run in CI (test/fuzz.test.ts).
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Prng } from './prng.js';
import { FuzzStats, formatCounts, type Finding } from './stats.js';
import { makeStorage } from './storage.js';
import { startHostProcess } from './host-process.js';
import { fuzzHost, canary } from './host-harness.js';
import { fuzzGuest } from './guest-harness.js';

export interface FuzzConfig {
  /** Frames in total (host side + guest side). */
  frames: number;
  seed: number;
  /** Share of the frames that go to the guest side (0..1). */
  guestShare?: number;
  /** Parallel connections to the host. */
  connections?: number;
  /** Concurrent file operations on the guest side. */
  guestConcurrency?: number;
  /** Where reproducers go. */
  outDir?: string;
  /** A progress line every this many frames (0: none). */
  progressEvery?: number;
  /** The host's RSS may grow by at most this much over the run. */
  rssGrowthLimitMb?: number;
  /** A host round trip after the run must take less than this. */
  canaryLimitMs?: number;
  /** A guest operation must settle within this. */
  guestSettleMs?: number;
  log?: (line: string) => void;
}

export interface FuzzReport {
  seed: number;
  framesHost: number;
  framesGuest: number;
  seconds: { host: number; guest: number; total: number };
  framesPerSecond: { host: number; guest: number; total: number };
  host: {
    rssStartMb: number;
    rssEndMb: number;
    rssPeakMb: number;
    fdsStart: number;
    fdsEnd: number;
    sessions: number;
    violations: number;
    violationReasons: Map<string, number>;
    warnings: Map<string, number>;
    closedByHost: number;
    survivedRisky: number;
    errorLogLines: number;
    errorLogSample: string[];
    exit: string | null;
  };
  guest: Record<string, number>;
  canary: { before: number; after: { ok: boolean; ms: number; detail: string } };
  errnos: { host: Map<string, number>; guest: Map<string, number> };
  counters: Map<string, number>;
  slowest: string;
  findings: Finding[];
  ok: boolean;
}

const mb = (kb: number) => Math.round(kb / 102.4) / 10;

export async function runFuzz(cfg: FuzzConfig): Promise<FuzzReport> {
  const log = cfg.log ?? (() => undefined);
  const guestShare = cfg.guestShare ?? 0.25;
  const guestFrames = Math.round(cfg.frames * guestShare);
  const hostFrames = cfg.frames - guestFrames;
  const outDir = cfg.outDir ?? path.join(os.tmpdir(), `dirvisor-fuzz-${cfg.seed}`);
  const stats = new FuzzStats(outDir);
  const root = new Prng(cfg.seed);
  const progressEvery = cfg.progressEvery ?? 100_000;
  const t0 = Date.now();
  let nextProgress = progressEvery;
  const progress = (rss: () => number) => {
    if (!progressEvery) return;
    while (stats.totalFrames >= nextProgress) {
      const s = (Date.now() - t0) / 1000;
      log(`[fuzz] ${stats.totalFrames} frames (host ${stats.framesHost}, guest ${stats.framesGuest}) in ${s.toFixed(1)} s, ${Math.round(stats.totalFrames / s)} frames/s, host RSS ${mb(rss())} MB, findings ${stats.findings.size}`);
      nextProgress += progressEvery;
    }
  };

  // Uncaught errors in this process come from the guest-side product code (or from us): findings.
  const onUncaught = (err: unknown) => stats.find('guest', 'uncaught-exception', String((err as Error)?.stack ?? err).slice(0, 2000), String((err as Error)?.message ?? err).slice(0, 100));
  const onRejection = (err: unknown) => stats.find('guest', 'unhandled-rejection', String((err as Error)?.stack ?? err).slice(0, 2000), String((err as Error)?.message ?? err).slice(0, 100));
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onRejection);

  const storage = await makeStorage('dirvisor-fuzz-');
  log(`[fuzz] seed ${cfg.seed} (FUZZ_SEED=${cfg.seed} repeats it); ${cfg.frames} frames: host ${hostFrames}, guest ${guestFrames}; storage ${storage.dir}${storage.tmpfs ? ' (tmpfs)' : ''}; reproducers in ${outDir}`);
  const host = await startHostProcess(storage.dir, storage.work).catch(async (err: unknown) => {
    await storage.cleanup();
    throw err;
  });
  let peakKb = 0;
  const sampler = setInterval(() => (peakKb = Math.max(peakKb, host.rssKb())), 250);
  let hostSeconds = 0;
  let guestSeconds = 0;
  let before = 0;
  let after = { ok: false, ms: 0, detail: 'not run' };
  let rssStartKb = 0;
  let rssEndKb = 0;
  let fdsStart = 0;
  let fdsEnd = 0;
  try {
    const warm = await canary({ host, stats, rng: root.fork(1000) });
    before = warm.ms;
    if (!warm.ok) stats.find('host', 'canary-failed', `getattr of the root before fuzzing failed: ${warm.detail}`);
    rssStartKb = host.rssKb();
    peakKb = rssStartKb;
    await sleep(200); // the canary's connection is closed on the host too
    fdsStart = host.fds();
    log(`[fuzz] host pid ${host.pid} serving ${host.uri}; RSS at start ${mb(rssStartKb)} MB; getattr round trip ${before.toFixed(2)} ms`);

    // ---- host side ----
    const h0 = Date.now();
    await fuzzHost({ host, frames: hostFrames, connections: cfg.connections ?? 16, rng: root.fork(1), stats, onProgress: () => progress(host.rssKb) });
    hostSeconds = (Date.now() - h0) / 1000;
    if (!host.alive()) {
      stats.find('host', 'crash', `the host agent exited (${host.exit?.code ?? host.exit?.signal}) during the run: ${host.stderr.slice(-3000)}`);
    } else {
      after = await canary({ host, stats, rng: root.fork(1001) });
      if (!after.ok) stats.find('host', 'canary-failed', `getattr of the root after fuzzing failed: ${after.detail}`);
      else if (after.ms > (cfg.canaryLimitMs ?? 1000)) stats.find('host', 'canary-slow', `getattr of the root after fuzzing took ${after.ms.toFixed(1)} ms`);
      rssEndKb = host.rssKb();
      // Every fuzz connection is closed now: the host should hold what it held at the start.
      await sleep(1000);
      fdsEnd = host.fds();
      if (fdsEnd - fdsStart > 16) stats.find('host', 'fd-growth', `host fds grew from ${fdsStart} to ${fdsEnd} with every fuzz connection closed (an fd leak)`);
      const growthMb = (rssEndKb - rssStartKb) / 1024;
      if (growthMb > (cfg.rssGrowthLimitMb ?? 256)) stats.find('host', 'rss-growth', `host RSS grew by ${growthMb.toFixed(0)} MB (start ${mb(rssStartKb)} MB, end ${mb(rssEndKb)} MB, peak ${mb(peakKb)} MB)`);
    }
    log(`[fuzz] host side done: ${stats.framesHost} frames in ${hostSeconds.toFixed(1)} s; RSS end ${mb(rssEndKb)} MB, peak ${mb(peakKb)} MB; canary ${after.ok ? 'ok' : 'FAILED'} in ${after.ms.toFixed(2)} ms`);

    // ---- guest side ----
    const g0 = Date.now();
    if (guestFrames > 0) {
      await fuzzGuest({ frames: guestFrames, rng: root.fork(2), stats, workDir: storage.work, concurrency: cfg.guestConcurrency ?? 32, settleMs: cfg.guestSettleMs ?? 20_000, onProgress: () => progress(host.rssKb) });
    }
    guestSeconds = (Date.now() - g0) / 1000;
    log(`[fuzz] guest side done: ${stats.framesGuest} frames in ${guestSeconds.toFixed(1)} s`);
  } finally {
    clearInterval(sampler);
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onRejection);
    // What the host said about the sessions findings happened on (its log may lag a little).
    await sleep(300);
    for (const f of stats.findings.values()) {
      const why = f.session ? host.closeReasonOf(f.session) : undefined;
      if (why) f.message += ` (the host logged for ${f.session}: connection closed, "${why}")`;
    }
    for (const [k, v] of host.errorKinds) {
      stats.find('host', 'error-logged', `the host logged ${v.count} line(s) at level error: ${k}\n      e.g. ${v.sample}`, k);
    }
    await host.stop();
    await storage.cleanup();
  }
  const total = (Date.now() - t0) / 1000;
  const findings = [...stats.findings.values()];
  return {
    seed: cfg.seed,
    framesHost: stats.framesHost,
    framesGuest: stats.framesGuest,
    seconds: { host: hostSeconds, guest: guestSeconds, total },
    framesPerSecond: {
      host: Math.round(stats.framesHost / Math.max(hostSeconds, 1e-3)),
      guest: Math.round(stats.framesGuest / Math.max(guestSeconds, 1e-3)),
      total: Math.round(stats.totalFrames / Math.max(total, 1e-3)),
    },
    host: {
      rssStartMb: mb(rssStartKb),
      rssEndMb: mb(rssEndKb),
      rssPeakMb: mb(peakKb),
      fdsStart,
      fdsEnd,
      sessions: stats.get('host.sessions'),
      violations: host.violationCount,
      violationReasons: host.violations,
      warnings: host.warnings,
      closedByHost: stats.get('host.closed-by-host'),
      survivedRisky: stats.get('host.survived-risky'),
      errorLogLines: host.errorCount,
      errorLogSample: host.errorLines.slice(0, 5),
      exit: host.exit && host.exit.signal !== 'SIGTERM' && host.exit.code !== 0 ? `${host.exit.code ?? host.exit.signal}` : null,
    },
    guest: Object.fromEntries([...stats.counters].filter(([k]) => k.startsWith('guest.')).map(([k, v]) => [k.slice(6), v])),
    canary: { before, after },
    errnos: stats.errnos,
    counters: stats.counters,
    slowest: stats.slowest(),
    findings,
    ok: findings.length === 0,
  };
}

export function formatReport(r: FuzzReport): string {
  const lines = [
    `seed ${r.seed}`,
    `frames: ${r.framesHost + r.framesGuest} (host ${r.framesHost}, guest ${r.framesGuest}) in ${r.seconds.total.toFixed(1)} s`,
    `rate: ${r.framesPerSecond.total} frames/s overall; host side ${r.framesPerSecond.host} frames/s, guest side ${r.framesPerSecond.guest} frames/s`,
    `host RSS: start ${r.host.rssStartMb} MB, end ${r.host.rssEndMb} MB, peak ${r.host.rssPeakMb} MB; open fds: start ${r.host.fdsStart}, end ${r.host.fdsEnd}`,
    `host sessions: ${r.host.sessions} opened; ${r.host.violations} closed by the host for protocol violations (host log); ${r.host.closedByHost} closes seen after risky frames, ${r.host.survivedRisky} risky frames survived`,
    `host violation reasons: ${formatCounts(r.host.violationReasons, 12)}`,
    `host other warnings: ${formatCounts(r.host.warnings, 12)}`,
    `host errors by errno: ${formatCounts(r.errnos.host)}`,
    `host reply time by request (largest totals): ${r.slowest}`,
    `canary getattr(root): before ${r.canary.before.toFixed(2)} ms, after ${r.canary.after.ms.toFixed(2)} ms (${r.canary.after.ok ? 'ok' : 'FAILED'})`,
    `guest: ${Object.entries(r.guest).map(([k, v]) => `${k}=${v}`).join(' ') || '(not run)'}`,
    `guest operation errors by errno: ${formatCounts(r.errnos.guest)}`,
    `counters: ${formatCounts(new Map([...r.counters].filter(([k]) => !k.startsWith('host.reply.') && !k.startsWith('guest.sent.'))), 60)}`,
    `host log lines at level error: ${r.host.errorLogLines}`,
    `findings: ${r.findings.length}`,
    ...r.findings.map((f) => `  [${f.side}] ${f.kind} x${f.count}: ${f.message.slice(0, 600)}${f.reproducer ? `\n      reproducer: ${f.reproducer}` : ''}`),
  ];
  return lines.join('\n');
}
