// systemd service integration (native/src/systemd.cc), without libsystemd:
// - sdNotify(): readiness, status and watchdog pings for a Type=notify unit (sd_notify(3));
// - watchdogIntervalMs() / startWatchdog(): the WatchdogSec= keep-alive (sd_watchdog_enabled(3)).
//
// Usage in a daemon:
//   await server.listen(...);
//   sdNotify('READY=1');                   // systemd now considers the unit started
//   const wd = startWatchdog({ onError: (err) => logger.warn({ err }, 'watchdog ping failed') });
//   ... on SIGTERM: sdNotify('STOPPING=1'); wd.stop();
// Outside systemd every call is a cheap no-op (sdNotify returns false, startWatchdog does nothing).
import { native } from './index.js';

interface SystemdBinding {
  notify(state: string, socketPath?: string): boolean;
  watchdogUsec(): number;
}

const binding = (): SystemdBinding => native.systemd as SystemdBinding;

/**
 * Sends `state` (e.g. 'READY=1', 'WATCHDOG=1', 'STATUS=serving 3 exports', 'STOPPING=1'; several
 * assignments separated by newlines) to the service manager through $NOTIFY_SOCKET, or
 * `socketPath` when given ('@name' is the abstract namespace).
 * Returns false when there is no notification socket (not started by systemd, or not
 * Type=notify); throws a system error (code, errno, syscall) if the datagram cannot be sent.
 */
export function sdNotify(state: string, socketPath: string | undefined = process.env.NOTIFY_SOCKET): boolean {
  if (!socketPath) return false;
  return binding().notify(state, socketPath);
}

/** Like sdNotify, but never throws: false when not under systemd or when the send failed. */
export function sdNotifyQuiet(state: string): boolean {
  try {
    return sdNotify(state);
  } catch {
    return false;
  }
}

/**
 * The watchdog interval systemd expects pings within (WatchdogSec=), in milliseconds, or 0 when
 * the watchdog is off or meant for another process ($WATCHDOG_PID).
 */
export function watchdogIntervalMs(): number {
  return binding().watchdogUsec() / 1000;
}

export interface Watchdog {
  /** The ping period in ms (half the watchdog interval), or 0 when the watchdog is off. */
  readonly periodMs: number;
  stop(): void;
}

export interface WatchdogOptions {
  /** Reports a failed ping (the timer keeps going). Default: a process warning, once. */
  onError?: (err: Error) => void;
  /** Keep the process alive for the timer's sake. Default false (the timer is unref'd). */
  ref?: boolean;
}

/**
 * Pings WATCHDOG=1 at half the interval systemd asked for, from the event loop: a wedged loop
 * stops the pings, and systemd restarts the unit (Restart=on-failure). Does nothing when the
 * watchdog is off.
 */
export function startWatchdog(opts: WatchdogOptions = {}): Watchdog {
  const interval = watchdogIntervalMs();
  if (interval <= 0 || !process.env.NOTIFY_SOCKET) return { periodMs: 0, stop() {} };
  const periodMs = Math.max(1, Math.floor(interval / 2));
  let warned = false;
  const onError = opts.onError ?? ((err: Error) => {
    if (!warned) process.emitWarning(err);
    warned = true;
  });
  const ping = () => {
    try {
      sdNotify('WATCHDOG=1');
    } catch (err) {
      onError(err as Error);
    }
  };
  ping();
  const timer = setInterval(ping, periodMs);
  if (!opts.ref) timer.unref();
  return {
    periodMs,
    stop() {
      clearInterval(timer);
    },
  };
}
