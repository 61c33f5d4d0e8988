// Placement policy for a directory that exists nowhere yet: among the eligible nodes, the one with
// the most free space left after its reserve. Pure functions, so the policy is testable alone.
import type { Reserve } from '../config.js';
import { formatBytes } from './units.js';

export interface Candidate {
  name: string;
  /** Position in host.yaml (ties go to the earlier node). */
  order: number;
  totalBytes: number;
  freeBytes: number;
  reserveBytes: number;
  /**
   * How many leading components of the directory already exist on this node. New directories go
   * where their deepest existing ancestor is, so a tree is not scattered across nodes.
   */
  depth: number;
}

export function reserveBytes(reserve: Reserve, totalBytes: number): number {
  return 'percent' in reserve ? Math.ceil((totalBytes * reserve.percent) / 100) : reserve.bytes;
}

export function headroom(c: Candidate): number {
  return c.freeBytes - c.reserveBytes;
}

/** "12.3 GiB free (reserve 1 GiB)" */
export function describeSpace(c: Candidate): string {
  return `${formatBytes(c.freeBytes)} free (reserve ${formatBytes(c.reserveBytes)})`;
}

export interface Pick {
  chosen: Candidate;
  /** The chosen node was preferred because it holds an ancestor (the ancestor's depth), else 0. */
  affinityDepth: number;
  /** The other nodes that had room. */
  others: Candidate[];
}

/**
 * The node to create on, or null when no candidate has room above its reserve. Among the nodes
 * with room, those holding the deepest existing ancestor win; then the most headroom; then the
 * earlier in the config.
 */
export function pickNode(candidates: Candidate[]): Pick | null {
  const roomy = candidates.filter((c) => headroom(c) > 0);
  if (!roomy.length) return null;
  const depth = Math.max(...roomy.map((c) => c.depth));
  const best = roomy
    .filter((c) => c.depth === depth)
    .sort((a, b) => headroom(b) - headroom(a) || a.order - b.order)[0];
  return { chosen: best, affinityDepth: depth, others: roomy.filter((c) => c !== best) };
}
