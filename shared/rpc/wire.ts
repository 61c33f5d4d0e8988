// The generated protobuf code, re-exported with short names, and the list of which Envelope bodies
// are requests, replies and events (the session routes on it).
import $protobuf from 'protobufjs/minimal.js';
import { dirvisor } from '../proto/generated/dirvisor.js';

// 64-bit fields decode as plain numbers, not Long objects: node ids, handles, sizes and offsets all
// stay below 2^53. (protobufjs uses Long whenever the long package is installed unless told not to.)
$protobuf.util.Long = undefined as unknown as typeof $protobuf.util.Long;
$protobuf.configure();

export const Envelope = dirvisor.Envelope;
export type Envelope = dirvisor.Envelope;
export type EnvelopeInit = dirvisor.Envelope.$Properties;
export type BodyKind = NonNullable<dirvisor.Envelope['body']>;
export { dirvisor as pb };

export const PROTOCOL_VERSION = 1;

const REPLIES = new Set<BodyKind>([
  'helloReply', 'pong', 'error', 'exportList', 'mountReply', 'ok',
  'entry', 'attr', 'opened', 'created', 'data', 'size', 'dir', 'statfsReply', 'offset',
]);
const EVENTS = new Set<BodyKind>([
  'cancel', 'goodbye', 'forget', 'invalidateInode', 'invalidateEntry', 'exportsChanged', 'changes',
]);

export type Role = 'request' | 'reply' | 'event';

export function roleOf(kind: BodyKind): Role {
  if (REPLIES.has(kind)) return 'reply';
  if (EVENTS.has(kind)) return 'event';
  return 'request';
}
