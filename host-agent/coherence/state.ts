// What the hub last knew (and last told guests) about names and inodes, in storage terms. It is
// what lets the hub (a) recognise the inotify echo of a change it already pushed, by comparing the
// state found now with the state it recorded when it pushed (so a change made after the push is
// never mistaken for the echo), (b) pair a name that went away with the one that appeared as a
// move, and (c) name an inode whose data changed, for receivers that only know its directory.
// Bounded: least recently used entries go first; losing one only costs a duplicate event.
import type { Stat } from '../../native/sys.js';

export class Lru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly max: number) {}

  get(k: K): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }

  set(k: K, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K);
  }

  delete(k: K): void {
    this.map.delete(k);
  }

  clear(): void {
    this.map.clear();
  }
}

/** The state of a name: the inode it is (with its S_IFMT type), or null for "no such name". */
export type NameState = { key: string; type: number } | null;

export interface Place {
  dir: string;
  name: Buffer;
}

/** The last state of an inode guests were told about, and which kinds of change (TOLD_*) they were told for it. */
export interface Print {
  print: string;
  told: number;
}
export const TOLD_DATA = 1;
export const TOLD_ATTR = 2;

/** The attributes that change when data or metadata does. */
export function fingerprint(st: Stat): string {
  return `${st.mode}:${st.nlink}:${st.uid}:${st.gid}:${st.size}:${st.mtimeSec}.${st.mtimeNsec}:${st.ctimeSec}.${st.ctimeNsec}`;
}

export function nameKey(dir: string, name: Buffer): string {
  return `${dir}/${name.toString('latin1')}`;
}

export class KnownState {
  private readonly names: Lru<string, NameState>;
  private readonly places: Lru<string, Place>;
  private readonly prints: Lru<string, Print>;

  constructor(max = 100_000) {
    this.names = new Lru(max);
    this.places = new Lru(max);
    this.prints = new Lru(max);
  }

  /** undefined: never seen. */
  name(dir: string, name: Buffer): NameState | undefined {
    return this.names.get(nameKey(dir, name));
  }

  setName(dir: string, name: Buffer, state: NameState): void {
    this.names.set(nameKey(dir, name), state);
    if (state) this.places.set(state.key, { dir, name: Buffer.from(name) });
  }

  setPlace(key: string, dir: string, name: Buffer): void {
    this.places.set(key, { dir, name: Buffer.from(name) });
  }

  /** The last name an inode was seen under. */
  place(key: string): Place | undefined {
    return this.places.get(key);
  }

  print(key: string): Print | undefined {
    return this.prints.get(key);
  }

  setPrint(key: string, print: string, told: number): void {
    this.prints.set(key, { print, told });
  }

  clear(): void {
    this.names.clear();
    this.places.clear();
    this.prints.clear();
  }
}
