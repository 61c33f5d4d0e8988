// The storage map and placement (see map.ts for the rules).
export { StorageMap, type ResolveOptions, type Resolution, type Decision, type NodeNote, type NodeStatus } from './map.js';
export { StorageError, type StorageErrorCode } from './errors.js';
export { NodeIo } from './node-io.js';
export { pickNode, reserveBytes, type Candidate } from './placement.js';
export { storageDirProblem, isUnder, hostPathOf } from './paths.js';
export { parseBytes, parseDuration, formatBytes } from './units.js';
