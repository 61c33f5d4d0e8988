// libfuse low-level callbacks (loop thread) and the loop / notification thread bodies.
// Every callback copies what it needs out of libfuse's buffer (it is reused for the next request)
// and posts a Request to the JS thread; it never waits for JavaScript.
#include "fuse_internal.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace dvfuse {

const char* const kOpNames[] = {
#define X(id, name) name,
    DVFUSE_OPS(X)
#undef X
};

namespace {

Core* CoreOf(fuse_req_t req) { return static_cast<Core*>(fuse_req_userdata(req)); }

// Our threads must not take Node's signals (SIGINT, SIGTERM, SIGCHLD...): the JS thread handles them.
void BlockSignals() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
}

// Ops whose outcome depends on who asks; the others act on an open handle or need no permission.
// Reading the groups costs a /proc read, so it is not done for read/write.
bool NeedsGroups(Op op) {
  switch (op) {
    case Op::LOOKUP: case Op::SETATTR: case Op::READLINK: case Op::MKNOD: case Op::MKDIR:
    case Op::UNLINK: case Op::RMDIR: case Op::SYMLINK: case Op::RENAME: case Op::LINK:
    case Op::OPEN: case Op::OPENDIR: case Op::CREATE: case Op::SETXATTR: case Op::GETXATTR:
    case Op::LISTXATTR: case Op::REMOVEXATTR: case Op::ACCESS:
      return true;
    default:
      return false;
  }
}

// The calling thread's supplementary groups, from the "Groups:" line of /proc/PID/task/PID/status
// (the pid FUSE gives is the thread's). fuse_req_getgroups reads the same file, but starts with a
// 1 KiB buffer that a status file never fits in, so it opened and read it twice for every request.
bool ReadGroups(pid_t pid, std::vector<gid_t>& out) {
  static const char kKey[] = "\nGroups:";
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task/%d/status", pid, pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // the process is gone: no groups, as libfuse
  thread_local std::vector<char> buf(8192);  // the loop thread's; grows for huge group lists
  size_t len = 0;
  const char* line = nullptr;  // the Groups line, once read up to its newline
  const char* eol = nullptr;
  for (;;) {
    if (len == buf.size()) buf.resize(buf.size() * 2);
    ssize_t n = read(fd, buf.data() + len, buf.size() - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += static_cast<size_t>(n);
    auto it = std::search(buf.begin(), buf.begin() + len, kKey, kKey + sizeof kKey - 1);
    if (it == buf.begin() + len) continue;
    auto nl = std::find(it + 1, buf.begin() + len, '\n');
    if (nl == buf.begin() + len) continue;
    line = &*it + sizeof kKey - 1;
    eol = &*nl;
    break;  // the rest of the file is of no use
  }
  close(fd);
  if (!line) return false;
  out.clear();
  for (const char* p = line; p < eol;) {
    if (*p < '0' || *p > '9') {
      p++;
      continue;
    }
    unsigned long g = 0;
    while (p < eol && *p >= '0' && *p <= '9') g = g * 10 + static_cast<unsigned long>(*p++ - '0');
    out.push_back(static_cast<gid_t>(g));
  }
  return true;
}

void Capture(fuse_req_t req, Request& r) {
  r.req = req;
  const fuse_ctx* ctx = fuse_req_ctx(req);
  r.uid = ctx->uid;
  r.gid = ctx->gid;
  r.pid = ctx->pid;
  r.umask = ctx->umask;
  if (!CoreOf(req)->cfg.groups || !NeedsGroups(r.op) || ctx->pid <= 0) return;
  r.hasGroups = ReadGroups(ctx->pid, r.groups);
}

// Builds a Request (fill sets the op's arguments) and posts it; ENOMEM if allocation fails.
template <class F>
void Dispatch(fuse_req_t req, Op op, F fill) {
  Request* r;
  try {
    std::unique_ptr<Request> p(new Request(op));
    Capture(req, *p);
    fill(*p);
    r = p.release();
  } catch (...) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  CoreOf(req)->Post(r);
}

void SetFh(Request& r, const fuse_file_info* fi) {
  if (!fi) return;
  r.hasFh = true;
  r.fh = fi->fh;
}

void CopyData(Request& r, const char* p, size_t n) {
  if (n == 0) return;
  r.data = static_cast<char*>(malloc(n));
  if (!r.data) throw std::bad_alloc();
  memcpy(r.data, p, n);
  r.dataLen = n;
}

void ll_init(void* userdata, fuse_conn_info* conn) {
  Core* core = static_cast<Core*>(userdata);
  const SessionConfig& cfg = core->cfg;
  core->initSeen = true;
  conn->max_write = std::min<uint32_t>(cfg.maxWrite, 1u << 20);  // libfuse also caps it to its buffer
  // libfuse refuses INIT unless this equals the max_read mount option given to fuse_session_new.
  conn->max_read = cfg.maxRead;
  if (cfg.maxReadahead) conn->max_readahead = cfg.maxReadahead;
  if (cfg.maxBackground) {
    conn->max_background = cfg.maxBackground;
    conn->congestion_threshold = cfg.maxBackground * 3 / 4;
  }
  if (cfg.writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
    conn->want |= FUSE_CAP_WRITEBACK_CACHE;
  else
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  // Node ids are not stable across agent restarts (no NFS export); no splice (we copy anyway).
  conn->want &= ~(FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
                  FUSE_CAP_SPLICE_MOVE);
  conn->time_gran = 1;
}

void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Dispatch(req, Op::LOOKUP, [&](Request& r) { r.ino = parent; r.name = name; });
}

// Forgets need no answer from the file system: answer now, tell JS afterwards.
void PostForgets(fuse_req_t req, const fuse_forget_data* items, size_t count) {
  Core* core = CoreOf(req);
  fuse_reply_none(req);
  try {
    auto* r = new Request(Op::FORGET);
    r->forgets.assign(items, items + count);
    core->Post(r);
  } catch (...) {
    // Out of memory: the file system keeps a few extra references; harmless.
  }
}

void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  fuse_forget_data one{ino, nlookup};
  PostForgets(req, &one, 1);
}

void ll_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  PostForgets(req, forgets, count);
}

void ll_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Dispatch(req, Op::GETATTR, [&](Request& r) { r.ino = ino; SetFh(r, fi); });
}

void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  Dispatch(req, Op::SETATTR, [&](Request& r) {
    r.ino = ino;
    r.st = *attr;
    r.mask = to_set;
    SetFh(r, fi);
  });
}

void ll_readlink(fuse_req_t req, fuse_ino_t ino) {
  Dispatch(req, Op::READLINK, [&](Request& r) { r.ino = ino; });
}

void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  Dispatch(req, Op::MKNOD, [&](Request& r) {
    r.ino = parent;
    r.name = name;
    r.mode = mode;
    r.rdev = rdev;
  });
}

void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Dispatch(req, Op::MKDIR, [&](Request& r) { r.ino = parent; r.name = name; r.mode = mode; });
}

void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Dispatch(req, Op::UNLINK, [&](Request& r) { r.ino = parent; r.name = name; });
}

void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Dispatch(req, Op::RMDIR, [&](Request& r) { r.ino = parent; r.name = name; });
}

void ll_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  Dispatch(req, Op::SYMLINK, [&](Request& r) { r.ino = parent; r.name = name; r.name2 = link; });
}

void ll_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
  Dispatch(req, Op::RENAME, [&](Request& r) {
    r.ino = parent;
    r.name = name;
    r.ino2 = newparent;
    r.name2 = newname;
    r.flags = static_cast<int32_t>(flags);
  });
}

void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  Dispatch(req, Op::LINK, [&](Request& r) { r.ino = ino; r.ino2 = newparent; r.name = newname; });
}

void ll_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Dispatch(req, Op::OPEN, [&](Request& r) { r.ino = ino; r.flags = fi->flags; });
}

void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Dispatch(req, Op::READ, [&](Request& r) {
    r.ino = ino;
    r.size = size;
    r.off = off;
    SetFh(r, fi);
  });
}

void ll_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) {
  Dispatch(req, Op::WRITE, [&](Request& r) {
    r.ino = ino;
    r.off = off;
    SetFh(r, fi);
    r.writepage = fi->writepage;
    CopyData(r, buf, size);
  });
}

void ll_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Dispatch(req, Op::FLUSH, [&](Request& r) { r.ino = ino; SetFh(r, fi); });
}

void ll_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Dispatch(req, Op::RELEASE, [&](Request& r) { r.ino = ino; r.flags = fi->flags; SetFh(r, fi); });
}

void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  Dispatch(req, Op::FSYNC, [&](Request& r) { r.ino = ino; r.datasync = datasync; SetFh(r, fi); });
}

void ll_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Dispatch(req, Op::OPENDIR, [&](Request& r) { r.ino = ino; r.flags = fi->flags; });
}

void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Dispatch(req, Op::READDIR, [&](Request& r) { r.ino = ino; r.size = size; r.off = off; SetFh(r, fi); });
}

void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Dispatch(req, Op::READDIRPLUS, [&](Request& r) {
    r.ino = ino;
    r.size = size;
    r.off = off;
    SetFh(r, fi);
  });
}

void ll_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Dispatch(req, Op::RELEASEDIR, [&](Request& r) { r.ino = ino; SetFh(r, fi); });
}

void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  Dispatch(req, Op::FSYNCDIR, [&](Request& r) { r.ino = ino; r.datasync = datasync; SetFh(r, fi); });
}

void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  Dispatch(req, Op::STATFS, [&](Request& r) { r.ino = ino; });
}

void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags) {
  Dispatch(req, Op::SETXATTR, [&](Request& r) {
    r.ino = ino;
    r.name = name;
    r.flags = flags;
    CopyData(r, value, size);
  });
}

void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Dispatch(req, Op::GETXATTR, [&](Request& r) { r.ino = ino; r.name = name; r.size = size; });
}

void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Dispatch(req, Op::LISTXATTR, [&](Request& r) { r.ino = ino; r.size = size; });
}

void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Dispatch(req, Op::REMOVEXATTR, [&](Request& r) { r.ino = ino; r.name = name; });
}

void ll_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  Dispatch(req, Op::ACCESS, [&](Request& r) { r.ino = ino; r.mask = mask; });
}

void ll_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  Dispatch(req, Op::CREATE, [&](Request& r) {
    r.ino = parent;
    r.name = name;
    r.mode = mode;
    r.flags = fi->flags;
  });
}

void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  fuse_file_info* fi) {
  Dispatch(req, Op::FALLOCATE, [&](Request& r) {
    r.ino = ino;
    r.mask = mode;
    r.off = offset;
    r.size = static_cast<uint64_t>(length);
    SetFh(r, fi);
  });
}

void ll_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                        fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                        int flags) {
  Dispatch(req, Op::COPY_FILE_RANGE, [&](Request& r) {
    r.ino = ino_in;
    r.off = off_in;
    SetFh(r, fi_in);
    r.ino2 = ino_out;
    r.off2 = off_out;
    if (fi_out) {
      r.hasFh2 = true;
      r.fh2 = fi_out->fh;
    }
    r.size = len;
    r.flags = flags;
  });
}

void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  Dispatch(req, Op::LSEEK, [&](Request& r) { r.ino = ino; r.off = off; r.mask = whence; SetFh(r, fi); });
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops;
  memset(&ops, 0, sizeof ops);
  ops.init = ll_init;
  ops.lookup = ll_lookup;
  ops.forget = ll_forget;
  ops.forget_multi = ll_forget_multi;
  ops.getattr = ll_getattr;
  ops.setattr = ll_setattr;
  ops.readlink = ll_readlink;
  ops.mknod = ll_mknod;
  ops.mkdir = ll_mkdir;
  ops.unlink = ll_unlink;
  ops.rmdir = ll_rmdir;
  ops.symlink = ll_symlink;
  ops.rename = ll_rename;
  ops.link = ll_link;
  ops.open = ll_open;
  ops.read = ll_read;
  ops.write = ll_write;
  ops.flush = ll_flush;
  ops.release = ll_release;
  ops.fsync = ll_fsync;
  ops.opendir = ll_opendir;
  ops.readdir = ll_readdir;
  ops.readdirplus = ll_readdirplus;
  ops.releasedir = ll_releasedir;
  ops.fsyncdir = ll_fsyncdir;
  ops.statfs = ll_statfs;
  ops.setxattr = ll_setxattr;
  ops.getxattr = ll_getxattr;
  ops.listxattr = ll_listxattr;
  ops.removexattr = ll_removexattr;
  ops.access = ll_access;
  ops.create = ll_create;
  ops.fallocate = ll_fallocate;
  ops.copy_file_range = ll_copy_file_range;
  ops.lseek = ll_lseek;
  return ops;
}

// A replay: one syscall through the mount so that the kernel raises the inotify events a local
// change would; the agent answers its FUSE requests without the host. It runs in a separate
// process (guest-agent/coherence/replay-process.ts), never in the one serving the mount: a thread
// waiting in the kernel for an answer from its own process cannot be killed, and a SIGKILLed agent
// would stay a zombie holding its mount.
// Everything is relative to an fd of the mount's root, resolved with openat2 beneath it, without
// following any symlink and without leaving the mount, on single-component names: whatever the
// names and links the host reports, a replay cannot reach anything outside this mount.
bool SafeName(const std::string& n) {
  return !n.empty() && n.size() <= 255 && n != "." && n != ".." && n.find('/') == std::string::npos &&
         n.find('\0') == std::string::npos;
}

// Opened for each replay and closed after it: an fd kept open would keep the mount busy.
int OpenReplayRoot(const std::string& mountpoint) {
  int fd = open(mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct statfs sf;
  if (fstatfs(fd, &sf) != 0 || sf.f_type != 0x65735546 /* FUSE_SUPER_MAGIC */) {
    close(fd);
    return -ENOTSUP;
  }
  return fd;
}

// An O_PATH fd of directory `rel` beneath `root` ("": the root itself, duplicated).
int OpenBeneath(int root, const std::string& rel) {
  if (rel.empty()) {
    int fd = fcntl(root, F_DUPFD_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
  }
  if (rel.find('\0') != std::string::npos || rel[0] == '/') return -EINVAL;
  open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how));
  return fd < 0 ? -errno : fd;
}

int RunReplayIn(int root, NotifyJob& j);

int RunReplayIn(int root, NotifyJob& j) {
  int dfd = OpenBeneath(root, j.rdir);
  if (dfd < 0) return dfd;
  const char* name = j.rname.c_str();
  int rc = 0;
  switch (j.replay) {
    case NotifyJob::R_MKNOD: rc = mknodat(dfd, name, j.mode, 0); break;
    case NotifyJob::R_MKDIR: rc = mkdirat(dfd, name, j.mode & 07777); break;
    case NotifyJob::R_SYMLINK: rc = symlinkat(j.target.c_str(), dfd, name); break;
    case NotifyJob::R_UNLINK: rc = unlinkat(dfd, name, 0); break;
    case NotifyJob::R_RMDIR: rc = unlinkat(dfd, name, AT_REMOVEDIR); break;
    case NotifyJob::R_RENAME: {
      int dfd2 = OpenBeneath(root, j.rdir2);
      if (dfd2 < 0) {
        close(dfd);
        return dfd2;
      }
      rc = renameat(dfd, name, dfd2, j.rname2.c_str());
      int err = rc < 0 ? errno : 0;
      close(dfd2);
      close(dfd);
      return -err;
    }
    case NotifyJob::R_WRITE: {
      // open + one byte written at `off` (or truncated to 0 when off < 0) + close: IN_OPEN,
      // IN_MODIFY, IN_CLOSE_WRITE, as a writer elsewhere would have caused. Regular files only:
      // looked up without following, checked, then opened through that very inode.
      int pfd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (pfd < 0) {
        rc = -errno;
        close(dfd);
        return rc;
      }
      struct stat st;
      int fd = -1;
      if (fstat(pfd, &st) != 0) rc = -errno;
      else if (!S_ISREG(st.st_mode)) rc = -EINVAL;
      else {
        std::string self = "/proc/self/fd/" + std::to_string(pfd);
        fd = open(self.c_str(), O_WRONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) rc = -errno;
      }
      close(pfd);
      if (fd >= 0) {
        const char zero = 0;
        if (j.off >= 0) rc = pwrite(fd, &zero, 1, j.off) == 1 ? 0 : -errno;
        else rc = ftruncate(fd, 0) == 0 ? 0 : -errno;
        close(fd);
      }
      close(dfd);
      return rc;
    }
    case NotifyJob::R_UTIMENS: rc = utimensat(dfd, name, j.times, AT_SYMLINK_NOFOLLOW); break;
  }
  int err = rc < 0 ? errno : 0;
  close(dfd);
  return -err;
}

int RunJob(Core& core, NotifyJob& j) {
  fuse_session* se = core.se;
  switch (j.kind) {
    case NotifyJob::INVAL_ENTRY:
      return fuse_lowlevel_notify_inval_entry(se, j.ino, j.name.data(), j.name.size());
    case NotifyJob::EXPIRE_ENTRY:
      return fuse_lowlevel_notify_expire_entry(se, j.ino, j.name.data(), j.name.size(), FUSE_LL_EXPIRE_ONLY);
    case NotifyJob::INVAL_INODE:
      return fuse_lowlevel_notify_inval_inode(se, j.ino, j.off, j.len);
    case NotifyJob::DELETE:
      return fuse_lowlevel_notify_delete(se, j.ino, j.child, j.name.data(), j.name.size());
    case NotifyJob::STORE: {
      fuse_bufvec bv = FUSE_BUFVEC_INIT(j.data.size());
      bv.buf[0].mem = j.data.data();
      return fuse_lowlevel_notify_store(se, j.ino, j.off, &bv, static_cast<fuse_buf_copy_flags>(0));
    }
  }
  return -EINVAL;
}

}  // namespace

int RunReplayAt(const std::string& mountpoint, NotifyJob& j) {
  if (!SafeName(j.rname) || (j.replay == NotifyJob::R_RENAME && !SafeName(j.rname2))) return -EINVAL;
  int root = OpenReplayRoot(mountpoint);
  if (root < 0) return root;
  int rc = RunReplayIn(root, j);
  close(root);
  return rc;
}

const fuse_lowlevel_ops* LowlevelOps() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return &ops;
}

void Core::Run() {
  pthread_setname_np(pthread_self(), "dirvisor-fuse");
  int err = 0;
  struct stat st;
  if (stat(mountpoint.c_str(), &st) != 0)
    err = errno;
  else if (!S_ISDIR(st.st_mode))
    err = ENOTDIR;
  else if (fuse_session_mount(se, mountpoint.c_str()) != 0)  // details go to stderr
    err = EIO;
  // Signals are blocked only after mounting: fusermount3 (forked above) inherits our mask.
  BlockSignals();
  const bool mounted = err == 0;
  bool announced = false;
  if (mounted) Serve(announced);
  // Not announced: INIT failed (libfuse says why on stderr) or the mount went away before it.
  if (!announced) Post(new MountedEvent(mounted ? EPROTO : err));
  if (announced) StopNotifier();
  Post(new ExitEvent(mounted));
}

// fuse_session_loop, plus one step: the kernel's INIT is the first request, and the mount is
// reported usable only once libfuse has accepted it (it refuses e.g. a max_read mismatch).
void Core::Serve(bool& announced) {
  fuse_buf buf{};
  while (!fuse_session_exited(se)) {
    int res = fuse_session_receive_buf(se, &buf);
    if (res == -EINTR) continue;
    if (res <= 0) break;  // the kernel ended the connection: unmounted (by us, fusermount3 -u, umount)
    fuse_session_process_buf(se, &buf);
    if (!announced && initSeen && !fuse_session_exited(se)) {
      announced = true;
      {
        std::lock_guard<std::mutex> lk(mu);
        notifyOpen = true;
      }
      notifier = std::thread(&Core::NotifyLoop, this);
      Post(new MountedEvent(0));
    }
  }
  free(buf.mem);
}

bool Core::PushJob(std::unique_ptr<NotifyJob>& job) {
  {
    std::lock_guard<std::mutex> lk(mu);
    if (!notifyOpen) return false;
    jobs.push_back(std::move(job));
  }
  cv.notify_one();
  return true;
}

void Core::NotifyLoop() {
  pthread_setname_np(pthread_self(), "dirvisor-notify");
  BlockSignals();
  for (;;) {
    std::unique_ptr<NotifyJob> job;
    bool open;
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return !jobs.empty() || !notifyOpen; });
      if (jobs.empty()) return;
      job = std::move(jobs.front());
      jobs.pop_front();
      open = notifyOpen;
    }
    // Once the loop has ended the connection is gone: fail what is left without touching it.
    int res = open ? RunJob(*this, *job) : -ENOTCONN;
    Post(new ResultEvent(job->deferred, res < 0 ? -res : 0));
  }
}

void Core::StopNotifier() {
  {
    std::lock_guard<std::mutex> lk(mu);
    notifyOpen = false;
  }
  cv.notify_all();
  if (notifier.joinable()) notifier.join();
}

}  // namespace dvfuse
