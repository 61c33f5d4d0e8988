// Sizes and durations as operators write them in host.yaml ("10%", "5GiB", "500 MB", "5s"), and
// byte counts as people read them in logs and errors ("12.3 GiB").

const BINARY: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 };
const DECIMAL: Record<string, number> = { k: 1e3, m: 1e6, g: 1e9, t: 1e12, p: 1e15 };

/**
 * Bytes from "1048576", "512KiB", "5 GiB", "1.5G" (K/M/G/T/P and KiB.. are powers of 1024, KB..
 * powers of 1000, as df and lsblk use them). Returns an error sentence instead of throwing.
 */
export function parseBytes(text: string): number | string {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i?b)?|(b))?\s*$/i.exec(text);
  if (!m) return `must be a size like 5GiB, 500MB or 1048576 (bytes), got "${text}"`;
  const n = Number(m[1]);
  const unit = m[2]?.toLowerCase();
  const scale = !unit ? 1 : m[3] && m[3].toLowerCase() === 'b' ? DECIMAL[unit] : BINARY[unit];
  const bytes = Math.round(n * scale);
  if (!Number.isSafeInteger(bytes)) return `is too large, got "${text}"`;
  return bytes;
}

/** Milliseconds from "5s", "500ms", "2m", or a plain number of seconds. */
export function parseDuration(value: unknown): number | string {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return Math.round(value * 1000);
  if (typeof value !== 'string') return `must be a duration like 5s or 500ms, got ${JSON.stringify(value)}`;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min)?\s*$/.exec(value);
  if (!m) return `must be a duration like 5s or 500ms, got "${value}"`;
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(unit === 'ms' ? n : unit === 's' ? n * 1000 : n * 60_000);
}

/** "512 B", "95 MiB", "12.3 GiB": three significant digits at most, binary units. */
export function formatBytes(bytes: number): string {
  const sign = bytes < 0 ? '-' : '';
  let n = Math.abs(bytes);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  const text = i === 0 || n >= 100 || Number.isInteger(n) ? String(Math.round(n)) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
  return `${sign}${text.replace(/\.0+$/, '').replace(/(\.\d*?)0+$/, '$1')} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}
