// Structured logs: pino JSON on stdout (journald picks it up), level from DIRVISOR_LOG_LEVEL.
// Each component and session logs through a child logger so every line names what it is about.
import { pino, destination, type Logger } from 'pino';

export type { Logger };

const JOURNAL_PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };

export function createLogger(name: string, level = process.env.DIRVISOR_LOG_LEVEL ?? 'info'): Logger {
  const opts = { name, level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (process.env.DIRVISOR_LOG_FORMAT !== 'journal') return pino(opts);
  // journald (SyslogLevelPrefix=yes) reads an sd-daemon "<N>" prefix as the line's priority.
  const out = destination({ fd: 1, sync: true });
  return pino(opts, {
    write(line: string) {
      const m = /^\{"level":(\d+)/.exec(line);
      out.write(`<${JOURNAL_PRIORITY[Number(m?.[1])] ?? 6}>${line}`);
    },
  });
}

/** A logger that discards everything (tests and benchmarks that do not look at logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
