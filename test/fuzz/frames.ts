// Frame bytes as the fuzzer handles them: `u32be envelope length | u32be payload length | envelope |
// payload`, built by hand so that lengths can lie, and a description of each generated frame.
import { Envelope, type EnvelopeInit } from '../../shared/rpc/wire.js';
import { HEADER_SIZE, DEFAULT_MAX_ENVELOPE, DEFAULT_MAX_PAYLOAD } from '../../shared/rpc/framing.js';

export { HEADER_SIZE, DEFAULT_MAX_ENVELOPE, DEFAULT_MAX_PAYLOAD };

export interface FuzzFrame {
  bytes: Buffer;
  /** Which generator/mutator made it, e.g. "valid:lookup", "mutate:bitflip(valid:read)". */
  label: string;
  /**
   * A well-formed frame within the limits: the peer must not close the session because of it.
   * Anything else may legitimately end the session (a protocol violation, as designed).
   */
  clean: boolean;
  /** Set on clean requests that must get exactly one reply (id != 0). */
  expectReplyId?: number;
  /** The frame ends the session on purpose (a Goodbye). */
  endsSession?: boolean;
  /** A Cancel event for this request id (which may then go without a reply). */
  cancels?: number;
}

/** Encodes an envelope object; null when protobufjs refuses the random values. */
export function encodeEnvelope(env: EnvelopeInit): Buffer | null {
  try {
    const bytes = Envelope.encode(env).finish();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  } catch {
    return null;
  }
}

/** A frame with truthful lengths. */
export function frameBytes(envelope: Buffer, payload?: Buffer): Buffer {
  const head = Buffer.allocUnsafe(HEADER_SIZE);
  head.writeUInt32BE(envelope.length, 0);
  head.writeUInt32BE(payload?.length ?? 0, 4);
  return payload?.length ? Buffer.concat([head, envelope, payload]) : Buffer.concat([head, envelope]);
}

/** True when a frame with these lengths is within the decoder's default limits. */
export function withinLimits(envelopeLength: number, payloadLength: number): boolean {
  return envelopeLength > 0 && envelopeLength <= DEFAULT_MAX_ENVELOPE && payloadLength <= DEFAULT_MAX_PAYLOAD;
}

/** Splits a truthful frame back into envelope and payload (for mutators that fix lengths up). */
export function splitFrame(frame: Buffer): { envelope: Buffer; payload: Buffer } {
  const e = frame.readUInt32BE(0);
  return { envelope: frame.subarray(HEADER_SIZE, HEADER_SIZE + e), payload: frame.subarray(HEADER_SIZE + e) };
}

/** Hex dump of the first bytes, for reproducers. */
export function hex(b: Buffer, max = 4096): string {
  return b.length > max ? `${b.subarray(0, max).toString('hex')}...(${b.length} bytes)` : b.toString('hex');
}

/** A decoded envelope as one line of JSON (bytes as hex). */
export function describe(envelope: object): string {
  return JSON.stringify(envelope, (_k, v: unknown) => {
    if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer') return Buffer.from((v as { data: number[] }).data).toString('hex');
    return v;
  });
}
