// `npm run fuzz` (node dist/test/fuzz/run.js): a long fuzz run of the host's and the guest's decoders
// and dispatchers. Environment:
//   FUZZ_FRAMES        frames in total (default 1,000,000)
//   FUZZ_SEED          PRNG seed (default: from the clock; printed at start, so a run can be repeated)
//   FUZZ_GUEST_SHARE   share of the frames for the guest side (default 0.25)
//   FUZZ_CONNECTIONS   parallel connections to the host (default 16)
//   FUZZ_OUT           where reproducers go (default /tmp/dirvisor-fuzz-SEED)
// Exit status 0 when nothing was found, 1 when there are findings (listed with their reproducers).
import { runFuzz, formatReport } from './engine.js';
import { seedFrom } from './prng.js';

function num(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got "${v}"`);
  return n;
}

async function main(): Promise<number> {
  const seed = seedFrom(process.env.FUZZ_SEED);
  const frames = Math.floor(num('FUZZ_FRAMES', 1_000_000));
  const report = await runFuzz({
    frames,
    seed,
    guestShare: num('FUZZ_GUEST_SHARE', 0.25),
    connections: Math.max(1, Math.floor(num('FUZZ_CONNECTIONS', 16))),
    outDir: process.env.FUZZ_OUT || undefined,
    progressEvery: 100_000,
    log: (line) => process.stdout.write(`${line}\n`),
  });
  process.stdout.write(`\n==== dirvisor fuzz report ====\n${formatReport(report)}\n`);
  return report.ok ? 0 : 1;
}

// Ctrl-C: exit through the 'exit' hooks, which stop the host agent and unmount the tmpfs.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`fuzz: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(2);
  },
);
