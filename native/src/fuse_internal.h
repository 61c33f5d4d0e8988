// Internals shared by fuse.cc (the JS binding) and fuse_ops.cc (the libfuse callbacks).
//
// Threads:
//   JS thread      owns the FuseSession object, sends every reply (fuse_reply_* is thread-safe).
//   loop thread    mounts, runs fuse_session_loop; each callback copies its arguments into a Request
//                  and posts it to JS through a thread-safe function, never waiting for JS.
//   notify thread  serves kernel cache notifications from a queue: they may block until the kernel
//                  gets replies that only the JS thread can send, so JS must never call them itself.
//                  Replays of changes made elsewhere (RunReplayAt) run in a helper process instead:
//                  a thread of this process waiting on its own mount could not be killed.
//   unmount thread short-lived, one per unmount(): umount2 may flush dirty pages through FUSE.
#pragma once

#include <fuse_lowlevel.h>
#include <napi.h>

#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dvfuse {

class FuseSession;
struct Core;

// Something the JS thread has to handle; posted by any thread.
struct Event {
  virtual ~Event() = default;
  // On the JS thread. `session` is alive: it keeps itself referenced until the TSFN is finalized.
  virtual void Deliver(Napi::Env env, FuseSession& session) = 0;
  // The environment is going away: release native resources (e.g. answer the kernel with EIO).
  virtual void Abandon() {}
};

void CallJs(Napi::Env env, Napi::Function fn, Core* core, Event* ev);
using Tsfn = Napi::TypedThreadSafeFunction<Core, Event, CallJs>;

#define DVFUSE_OPS(X)                                                                            \
  X(LOOKUP, "lookup") X(FORGET, "forget") X(GETATTR, "getattr") X(SETATTR, "setattr")            \
  X(READLINK, "readlink") X(MKNOD, "mknod") X(MKDIR, "mkdir") X(UNLINK, "unlink")                \
  X(RMDIR, "rmdir") X(SYMLINK, "symlink") X(RENAME, "rename") X(LINK, "link") X(OPEN, "open")    \
  X(READ, "read") X(WRITE, "write") X(FLUSH, "flush") X(RELEASE, "release") X(FSYNC, "fsync")    \
  X(OPENDIR, "opendir") X(READDIR, "readdir") X(READDIRPLUS, "readdirplus")                      \
  X(RELEASEDIR, "releasedir") X(FSYNCDIR, "fsyncdir") X(STATFS, "statfs")                        \
  X(SETXATTR, "setxattr") X(GETXATTR, "getxattr") X(LISTXATTR, "listxattr")                      \
  X(REMOVEXATTR, "removexattr") X(ACCESS, "access") X(CREATE, "create")                          \
  X(FALLOCATE, "fallocate") X(COPY_FILE_RANGE, "copyFileRange") X(LSEEK, "lseek")

enum class Op : uint8_t {
#define X(id, name) id,
  DVFUSE_OPS(X)
#undef X
  COUNT
};
extern const char* const kOpNames[];

// One kernel request, with every argument copied out of libfuse's (reused) buffer.
// Field use depends on op; see the request shapes in native/fuse.ts.
struct Request final : Event {
  Op op;
  fuse_req_t req = nullptr;  // null for forget (answered at once: there is nothing to wait for)
  uint32_t uid = 0, gid = 0, pid = 0, umask = 0;
  bool hasGroups = false;
  std::vector<gid_t> groups;
  uint64_t ino = 0, ino2 = 0;
  std::string name, name2;  // name / newName / symlink target / xattr name
  char* data = nullptr;     // write payload or xattr value (malloc'd, handed to a JS Buffer)
  size_t dataLen = 0;
  int64_t off = 0, off2 = 0;
  uint64_t size = 0;  // read/readdir/xattr size, length for fallocate and copy_file_range
  int32_t flags = 0;
  uint32_t mode = 0;
  uint64_t rdev = 0;
  int32_t mask = 0;  // access mask, setattr valid bits, lseek whence, fallocate mode
  bool hasFh = false, hasFh2 = false;
  uint64_t fh = 0, fh2 = 0;
  bool datasync = false, writepage = false;
  struct stat st {};
  std::vector<fuse_forget_data> forgets;

  explicit Request(Op o) : op(o) {}
  ~Request() override { free(data); }
  void Deliver(Napi::Env env, FuseSession& session) override;  // fuse.cc
  void Abandon() override {
    if (req) fuse_reply_err(req, EIO);
    req = nullptr;
  }
};

struct SessionConfig {
  uint32_t maxWrite = 1u << 20;
  uint32_t maxRead = 0;  // 0: no limit; must equal the max_read mount option (libfuse checks)
  uint32_t maxReadahead = 0;   // 0: kernel default
  uint32_t maxBackground = 0;  // 0: libfuse default
  bool writeback = false;
  bool groups = true;  // read supplementary groups (from /proc) for permission-relevant ops
};

// A queued kernel notification; `deferred` is only touched on the JS thread.
struct NotifyJob {
  enum Kind { INVAL_ENTRY, EXPIRE_ENTRY, INVAL_INODE, DELETE, STORE, REPLAY } kind;  // REPLAY: see RunReplayAt
  // REPLAY: a syscall on entry `rname` of directory `rdir` (a path relative to the mount's root,
  // "" for the root itself); rename moves it to `rname2` in `rdir2`; `target` is a symlink's.
  enum ReplayOp { R_MKNOD, R_MKDIR, R_SYMLINK, R_UNLINK, R_RMDIR, R_RENAME, R_WRITE, R_UTIMENS };
  ReplayOp replay = R_MKNOD;
  uint64_t ino = 0, child = 0;
  int64_t off = 0, len = 0;
  uint32_t mode = 0;
  timespec times[2] = {};
  std::string name, name2;
  std::string rdir, rname, rdir2, rname2, target;
  std::vector<char> data;
  napi_deferred deferred = nullptr;
};

// State reached from the native threads; the TSFN's context. Owned by FuseSession and deleted with
// it once the TSFN is finalized (so no thread can still post); leaked if Node tears down mid-mount.
struct Core {
  FuseSession* owner = nullptr;  // null once the JS object is gone
  fuse_session* se = nullptr;
  std::string mountpoint;
  SessionConfig cfg;
  Tsfn tsfn;
  bool tsfnCreated = false, tsfnFinalized = false;  // JS thread only
  std::atomic<bool> tsfnClosed{false};  // Node is tearing down: post nothing more
  std::thread loop;
  bool initSeen = false;  // loop thread only: the kernel's INIT reached ll_init

  std::mutex mu;  // guards the notification queue
  std::condition_variable cv;
  std::deque<std::unique_ptr<NotifyJob>> jobs;
  bool notifyOpen = false;  // accepting jobs (mounted, loop running)
  std::thread notifier;

  void Post(Event* ev);  // from any thread; takes ownership
  void Run();  // loop thread body (fuse_ops.cc)
  void Serve(bool& announced);  // the request loop; announces the mount once INIT is answered
  bool PushJob(std::unique_ptr<NotifyJob>& job);
  void NotifyLoop();
  void StopNotifier();
};

// Posted by the loop / notify / unmount threads.
struct MountedEvent final : Event {
  int err;
  explicit MountedEvent(int e) : err(e) {}
  void Deliver(Napi::Env env, FuseSession& session) override;
};
struct ExitEvent final : Event {
  bool wasMounted;
  explicit ExitEvent(bool m) : wasMounted(m) {}
  void Deliver(Napi::Env env, FuseSession& session) override;
};
// Resolves a promise with 0 or a positive errno.
struct ResultEvent final : Event {
  napi_deferred deferred;
  int err;
  ResultEvent(napi_deferred d, int e) : deferred(d), err(e) {}
  void Deliver(Napi::Env env, FuseSession& session) override;
};

const fuse_lowlevel_ops* LowlevelOps();

// Runs a REPLAY job on the calling thread, beneath the FUSE mount at `mountpoint`: 0 or -errno.
// Only ever from a process that does not serve that mount (see fuse_ops.cc).
int RunReplayAt(const std::string& mountpoint, NotifyJob& j);

}  // namespace dvfuse
