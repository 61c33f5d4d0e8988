// Small helpers shared by the command-line programs: argument errors that say what to do, and a
// single place that turns a thrown error into a message and an exit status.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function parse<T extends ParseArgsConfig>(program: string, argv: string[], config: T) {
  try {
    return parseArgs({ ...config, args: argv, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(`${(err as Error).message.replace(/^TypeError \[[A-Z_]+\]: /, '')}\nRun "${program} --help" for usage.`);
  }
}

/** Runs a CLI's main function: usage errors exit 2, other failures 1, each with one clear line. */
export function runMain(program: string, main: () => Promise<number | void>): void {
  main().then(
    (code) => {
      if (typeof code === 'number') process.exitCode = code;
    },
    (err: unknown) => {
      const e = err as Error;
      process.stderr.write(`${program}: ${e?.message ?? String(err)}\n`);
      if (process.env.DIRVISOR_DEBUG) process.stderr.write(`${e?.stack}\n`);
      process.exitCode = err instanceof UsageError ? 2 : 1;
    },
  );
}
