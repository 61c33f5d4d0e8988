// The Hello exchange: first request on every connection. It settles the protocol version and the
// features both sides have, and carries the token on transports that do not identify the peer.
import crypto from 'node:crypto';
import { FsError, E } from '../fs/errors.js';
import type { Session } from './session.js';
import { PROTOCOL_VERSION, type pb } from './wire.js';

export const MIN_VERSION = 1;
export const AGENT_VERSION = '0.1.0';

/** Features this build can use; the session uses the intersection of both sides' lists. */
export const FEATURES = ['payload-frames', 'readdirplus', 'invalidate'] as const;

export interface HelloResult {
  version: number;
  features: string[];
  agent: string;
  vmName: string;
  maxFrame: number;
}

export async function sendHello(session: Session, options: { token?: string; agent: string; deadlineMs?: number }): Promise<HelloResult> {
  const reply = await session.request(
    {
      hello: {
        minVersion: MIN_VERSION,
        maxVersion: PROTOCOL_VERSION,
        features: [...FEATURES],
        token: options.token ?? '',
        agent: options.agent,
      },
    },
    { deadlineMs: options.deadlineMs ?? 10_000 },
  );
  const r = reply.envelope.helloReply;
  if (!r) throw new FsError(E.EPROTO, 'peer answered Hello with something other than HelloReply');
  return { version: r.version ?? 0, features: r.features ?? [], agent: r.agent ?? '', vmName: r.vmName ?? '', maxFrame: r.maxFrame ?? 0 };
}

/** Server side: checks the version range, returns the chosen version and common features. */
export function negotiate(hello: pb.Hello.$Properties): { version: number; features: string[] } {
  const min = hello.minVersion ?? 0;
  const max = hello.maxVersion ?? 0;
  const version = Math.min(PROTOCOL_VERSION, max);
  if (version < Math.max(MIN_VERSION, min)) {
    throw new FsError(
      E.EPROTONOSUPPORT,
      `protocol versions do not overlap: peer speaks ${min}-${max}, this agent ${MIN_VERSION}-${PROTOCOL_VERSION}; upgrade the older agent`,
    );
  }
  const ours = new Set<string>(FEATURES);
  return { version, features: (hello.features ?? []).filter((f) => ours.has(f)) };
}

/** Constant-time token comparison (a timing difference must not leak the token). */
export function tokenMatches(given: string, expected: string): boolean {
  const a = crypto.createHash('sha256').update(given).digest();
  const b = crypto.createHash('sha256').update(expected).digest();
  return crypto.timingSafeEqual(a, b) && given.length > 0;
}
