// Structured logs: pino JSON on stdout (journald picks it up), level from DIRVISOR_LOG_LEVEL.
// Each component and session logs through a child logger so every line names what it is about.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(name: string, level = process.env.DIRVISOR_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}

/** A logger that discards everything (tests and benchmarks that do not look at logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
