// Clean unmount when the agent is asked to stop (SIGTERM from systemd, SIGINT from a terminal).
// Without it the mounts would be left "Transport endpoint is not connected" when the process exits.
import { E } from '../../shared/fs/errors.js';
import type { Logger } from '../../shared/log.js';
import type { Mount } from './adapter.js';

export interface SignalOptions {
  signals?: NodeJS.Signals[];
  /** How long a plain unmount may wait (EBUSY retries) before falling back to a lazy one. Default 5 s. */
  graceMs?: number;
  /** After unmounting: re-raise the signal (default), call this, or do nothing ('stay'). */
  then?: 'reraise' | 'stay' | (() => void);
  logger?: Logger;
}

/** Unmounts everything (busy mounts lazily after graceMs), in parallel. */
export async function unmountAll(mounts: Iterable<Mount>, graceMs = 5000, logger?: Logger): Promise<void> {
  await Promise.all(
    [...mounts].map(async (m) => {
      const deadline = Date.now() + graceMs;
      for (;;) {
        try {
          await m.unmount();
          return;
        } catch (err) {
          const busy = (err as { errno?: number }).errno === E.EBUSY;
          if (!busy || Date.now() >= deadline) {
            logger?.warn({ err, mountpoint: m.mountpoint }, 'unmount failed; detaching lazily');
            try {
              await m.unmount({ lazy: true });
            } catch (err2) {
              logger?.error({ err: err2, mountpoint: m.mountpoint }, 'lazy unmount failed');
            }
            return;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }),
  );
}

/**
 * On the first signal, unmounts every mount `getMounts()` returns, then re-raises the signal with
 * its default action (so the exit status says what happened). A second signal exits at once.
 * Returns a function that removes the handlers.
 */
export function unmountOnSignals(getMounts: () => Iterable<Mount>, opts: SignalOptions = {}): () => void {
  const signals = opts.signals ?? ['SIGTERM', 'SIGINT'];
  let stopping = false;
  const remove = (): void => {
    for (const s of signals) process.off(s, handler);
  };
  function handler(sig: NodeJS.Signals): void {
    if (stopping) {
      opts.logger?.warn({ signal: sig }, 'second signal: exiting without waiting for unmounts');
      process.exit(1);
    }
    stopping = true;
    opts.logger?.info({ signal: sig }, 'unmounting before exit');
    void unmountAll(getMounts(), opts.graceMs, opts.logger).finally(() => {
      remove();
      const then = opts.then ?? 'reraise';
      if (then === 'reraise') process.kill(process.pid, sig);
      else if (typeof then === 'function') then();
    });
  }
  for (const s of signals) process.on(s, handler);
  return remove;
}
