// Name validation: the only names the POSIX backend hands to the kernel are single components.
// Together with fd-relative calls this is what keeps a guest inside its export: there is never a
// multi-component path for a rename race on the storage side to redirect.
//
// Errno choices (documented for the protocol and the guest):
//   empty, ".", "..", containing "/" or NUL  -> EINVAL
//   longer than 255 bytes                     -> ENAMETOOLONG
//   xattr names: empty or over 255 bytes -> ERANGE (as the kernel), NUL inside -> EINVAL
import { E, FsError } from '../../shared/fs/errors.js';

export const NAME_MAX = 255;
export const SYMLINK_MAX = 4095; // PATH_MAX - 1: what Linux file systems accept as a link target
export const XATTR_NAME_MAX = 255;
export const XATTR_SIZE_MAX = 65536;

const SLASH = 0x2f;
const DOT = 0x2e;

/** Throws unless `name` is exactly one path component. */
export function checkName(name: Buffer): void {
  if (!Buffer.isBuffer(name) || name.length === 0) throw new FsError(E.EINVAL, 'empty name');
  if (name.length > NAME_MAX) throw new FsError(E.ENAMETOOLONG);
  if (name.includes(SLASH) || name.includes(0)) throw new FsError(E.EINVAL, 'name with "/" or NUL');
  if (name[0] === DOT && (name.length === 1 || (name.length === 2 && name[1] === DOT))) {
    throw new FsError(E.EINVAL, 'name "." or ".."');
  }
}

/** A symlink's target is stored, never followed by the host: only NUL and length matter. */
export function checkLinkTarget(target: Buffer): void {
  if (!Buffer.isBuffer(target) || target.length === 0) throw new FsError(E.ENOENT, 'empty symlink target');
  if (target.length > SYMLINK_MAX) throw new FsError(E.ENAMETOOLONG);
  if (target.includes(0)) throw new FsError(E.EINVAL, 'NUL in symlink target');
}

export function checkXattrName(name: Buffer): void {
  if (!Buffer.isBuffer(name) || name.length === 0 || name.length > XATTR_NAME_MAX) throw new FsError(E.ERANGE);
  if (name.includes(0)) throw new FsError(E.EINVAL, 'NUL in xattr name');
}
