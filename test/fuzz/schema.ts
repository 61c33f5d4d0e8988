// The protocol as data: every body type of the Envelope `oneof`, read from the .proto by reflection
// (as test/wire.test.ts does), so a message type added to the protocol is fuzzed without a change here.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { roleOf, type BodyKind, type Role } from '../../shared/rpc/wire.js';

/** The repository root (this file runs as dist/test/fuzz/schema.js). */
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export const protoRoot = protobuf.loadSync(path.join(REPO, 'shared/proto/dirvisor.proto'));
export const envelopeType = protoRoot.lookupType('dirvisor.Envelope');

export interface BodyField {
  /** camelCase name, as the generated code and `Envelope.body` spell it. */
  name: BodyKind;
  /** Field number in the Envelope. */
  id: number;
  type: protobuf.Type;
  role: Role;
}

export const bodyFields: BodyField[] = envelopeType.oneofs.body.fieldsArray.map((f) => {
  f.resolve();
  return { name: f.name as BodyKind, id: f.id, type: f.resolvedType as protobuf.Type, role: roleOf(f.name as BodyKind) };
});

export const bodyByName = new Map(bodyFields.map((b) => [b.name, b]));

/** Body kinds the guest sends as requests that are file operations (the host's dispatch table). */
export const FILE_OPS = new Set<string>(bodyFields.filter((b) => b.id >= 40 && b.id < 100).map((b) => b.name));

export const requests = bodyFields.filter((b) => b.role === 'request');
export const replies = bodyFields.filter((b) => b.role === 'reply');
export const events = bodyFields.filter((b) => b.role === 'event');

/** The reply body each request normally gets (what the guest's RemoteFileSystem expects). */
export const REPLY_FOR: Record<string, BodyKind> = {
  hello: 'helloReply', ping: 'pong', listExports: 'exportList', mountExport: 'mountReply', unmountExport: 'ok',
  lookup: 'entry', getattr: 'attr', setattr: 'attr', readlink: 'data', mknod: 'entry', mkdir: 'entry',
  unlink: 'ok', rmdir: 'ok', symlink: 'entry', rename: 'ok', link: 'entry', open: 'opened', create: 'created',
  read: 'data', write: 'size', flush: 'ok', fsync: 'ok', release: 'ok', opendir: 'opened', readdir: 'dir',
  fsyncdir: 'ok', releasedir: 'ok', statfs: 'statfsReply', setxattr: 'ok', getxattr: 'data', listxattr: 'data',
  removexattr: 'ok', access: 'ok', fallocate: 'ok', copyFileRange: 'size', lseek: 'offset',
};
