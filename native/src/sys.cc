// sys.cc — fd-relative Linux file syscalls for the host's POSIX backend, run off the JS thread.
//
// Why a pool of our own rather than Napi::AsyncWorker on the libuv threadpool:
//  - calls into network storage (NFS, CephFS...) can block for a long time; on libuv's 4 shared
//    threads they would starve Node's own fs/dns work;
//  - each of our threads unshares its fs_struct (CLONE_FS) so it can run with umask 0 (the guest
//    already applied its umask) without touching the rest of the process;
//  - per-call credentials (setfsuid/setfsgid/setgroups, all per-thread as raw syscalls) are only
//    ever switched on threads that nothing else uses.
// Completions come back through one uv_async_t and settle promises inside a callback scope, so
// promise reactions run right away.
//
// Every function lives on `exports.sys`, returns a Promise, and rejects with an Error carrying
// `errno` (positive), `code` ('ENOENT'...) and `syscall`. An optional trailing `creds` argument
// {uid, gid, groups?} runs the syscall with those fs credentials.
#include "addon.h"

#include <uv.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <cerrno>
#include <cstdio>  // renameat2, RENAME_* (glibc >= 2.28)
#include <cstdlib>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452  // Linux 6.6; same number on every architecture
#endif
#ifndef SYS_faccessat2
#define SYS_faccessat2 439
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef AT_EACCESS
#define AT_EACCESS 0x200
#endif

namespace {

// ---------------------------------------------------------------------------------------------
// Credentials

struct Creds {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  bool operator==(const Creds& o) const { return uid == o.uid && gid == o.gid && groups == o.groups; }
  bool operator!=(const Creds& o) const { return !(*this == o); }
};

// What our threads run as when a call carries no credentials: the process's own.
Creds processCreds() {
  Creds c;
  c.uid = geteuid();
  c.gid = getegid();
  int n = getgroups(0, nullptr);
  if (n > 0) {
    c.groups.resize(n);
    n = getgroups(n, c.groups.data());
    c.groups.resize(n > 0 ? n : 0);
  }
  return c;
}

// Switches the calling thread's fs credentials. Raw syscalls only: glibc's setgroups (and
// setresuid...) broadcast to every thread of the process, which is exactly what we must not do.
// Order matters: groups and fsgid first, while fsuid still holds whatever CAP_SETGID allows.
int applyCreds(const Creds& c) {
  if (syscall(SYS_setgroups, c.groups.size(), c.groups.empty() ? nullptr : c.groups.data()) != 0) return -errno;
  syscall(SYS_setfsgid, c.gid);
  if ((gid_t)syscall(SYS_setfsgid, (gid_t)-1) != c.gid) return -EPERM;  // -1 only reads back
  syscall(SYS_setfsuid, c.uid);
  if ((uid_t)syscall(SYS_setfsuid, (uid_t)-1) != c.uid) return -EPERM;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Jobs and the pool

// exec runs on a pool thread and returns a result >= 0 or -errno; done runs on the JS thread and
// turns the result into the resolved value. State shared between the two lives in their captures.
using Exec = std::function<long()>;
using Done = std::function<Napi::Value(Napi::Env, long)>;

struct Job {
  Job(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise::Deferred deferred;
  const char* syscall = "";
  bool hasCreds = false;
  Creds creds;
  Exec exec;
  Done done;
  long result = 0;
};

class Pool {
 public:
  explicit Pool(Napi::Env env) : env_(env), root_(processCreds()) {
    napi_get_uv_event_loop(env, &loop_);
    uv_async_init(loop_, &async_, &Pool::OnAsync);
    async_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(&async_));  // only pending jobs keep the loop alive
    ctx_ = std::make_unique<Napi::AsyncContext>(env, "dirvisor:sys");
    const char* t = getenv("DIRVISOR_SYS_THREADS");
    wantThreads_ = t && atoi(t) > 0 ? (size_t)atoi(t) : 16;
    napi_add_env_cleanup_hook(env, &Pool::Cleanup, this);
  }

  void SetThreads(size_t n) {
    std::lock_guard<std::mutex> lk(mu_);
    wantThreads_ = n;
  }

  void Submit(Job* job) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      // Threads start lazily (an addon loaded only for vsock never spawns them) and grow on demand.
      queue_.push_back(job);
      if (queue_.size() > idle_ && threads_.size() < wantThreads_) threads_.emplace_back(&Pool::ThreadMain, this);
    }
    cv_.notify_one();
    if (inflight_++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(&async_));
  }

 private:
  void ThreadMain() {
    pthread_setname_np(pthread_self(), "dirvisor-io");  // visible in top -H, /proc/PID/task/*/comm
    // A private fs_struct lets this thread use umask 0 alone: modes from the guest are final.
    if (unshare(CLONE_FS) == 0) umask(0);
    Creds current = root_;
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        idle_++;
        cv_.wait(lk, [this] { return stopping_ || !queue_.empty(); });
        idle_--;
        if (stopping_) return;
        job = queue_.front();
        queue_.pop_front();
      }
      const Creds& want = job->hasCreds ? job->creds : root_;
      long r = 0;
      if (want != current) {
        r = applyCreds(want);
        if (r == 0) {
          current = want;
        } else if (applyCreds(root_) == 0) {
          current = root_;
        } else {
          // Cannot happen while the process keeps CAP_SETUID/CAP_SETGID; never run with unknown creds.
          fprintf(stderr, "dirvisor sys: cannot restore thread credentials\n");
          abort();
        }
      }
      if (r == 0) {
        try {
          r = job->exec();
        } catch (const std::bad_alloc&) {
          r = -ENOMEM;
        } catch (...) {
          r = -EIO;
        }
      }
      job->result = r;
      {
        std::lock_guard<std::mutex> lk(mu_);
        done_.push_back(job);
      }
      uv_async_send(&async_);
    }
  }

  static void OnAsync(uv_async_t* handle) {
    Pool* self = static_cast<Pool*>(handle->data);
    std::vector<Job*> batch;
    {
      std::lock_guard<std::mutex> lk(self->mu_);
      batch.swap(self->done_);
    }
    if (batch.empty()) return;
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    // Closing the callback scope runs the microtask queue: awaiting code continues now.
    Napi::CallbackScope cbScope(env, *self->ctx_);
    for (Job* job : batch) {
      Napi::HandleScope inner(env);
      try {
        if (job->result < 0) {
          job->deferred.Reject(MakeError(env, (int)-job->result, job->syscall).Value());
        } else {
          job->deferred.Resolve(job->done ? job->done(env, job->result) : env.Undefined());
        }
      } catch (const Napi::Error& e) {
        job->deferred.Reject(e.Value());
      }
      delete job;
      if (--self->inflight_ == 0) uv_unref(reinterpret_cast<uv_handle_t*>(&self->async_));
    }
  }

  static void Cleanup(void* arg) {
    Pool* self = static_cast<Pool*>(arg);
    {
      std::lock_guard<std::mutex> lk(self->mu_);
      self->stopping_ = true;
    }
    self->cv_.notify_all();
    for (auto& t : self->threads_) t.join();
    for (Job* j : self->queue_) delete j;
    for (Job* j : self->done_) delete j;
    self->ctx_.reset();
    uv_close(reinterpret_cast<uv_handle_t*>(&self->async_),
             [](uv_handle_t* h) { delete static_cast<Pool*>(h->data); });
  }

 public:
  static Napi::Error MakeError(Napi::Env env, int err, const char* syscall) {
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 32)
    const char* name = strerrorname_np(err);
#else
    const char* name = uv_err_name(-err);  // older glibc (RHEL 8): libuv knows the common ones
    if (name && name[0] != 'E') name = nullptr;
#endif
    std::string code = name ? name : ("E" + std::to_string(err));
    Napi::Error e = Napi::Error::New(env, code + ": " + strerror(err) + ", " + syscall);
    e.Set("errno", Napi::Number::New(env, err));
    e.Set("code", Napi::String::New(env, code));
    e.Set("syscall", Napi::String::New(env, syscall));
    return e;
  }

 private:
  Napi::Env env_;
  uv_loop_t* loop_ = nullptr;
  uv_async_t async_;
  std::unique_ptr<Napi::AsyncContext> ctx_;
  const Creds root_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job*> queue_;
  std::vector<Job*> done_;
  std::vector<std::thread> threads_;
  size_t wantThreads_ = 16;
  size_t idle_ = 0;
  bool stopping_ = false;
  size_t inflight_ = 0;  // JS thread only
};

// ---------------------------------------------------------------------------------------------
// Argument helpers (throw TypeError synchronously: these are programming errors, not errnos)

Pool* PoolOf(const Napi::CallbackInfo& info) { return static_cast<Pool*>(info.Data()); }

int64_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = info[i];
  if (v.IsNumber()) return v.As<Napi::Number>().Int64Value();
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Int64Value(&lossless);
  }
  throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number or bigint");
}

int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), "fd must be a number");
  return v.As<Napi::Number>().Int32Value();
}

// Paths and names: a string (UTF-8) or a Buffer of raw bytes; an embedded NUL is refused.
std::string ArgPath(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = info[i];
  std::string s;
  if (v.IsString()) {
    s = v.As<Napi::String>().Utf8Value();
  } else if (v.IsBuffer()) {
    auto b = v.As<Napi::Buffer<char>>();
    s.assign(b.Data(), b.Length());
  } else {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string or Buffer");
  }
  if (s.find('\0') != std::string::npos)
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must not contain NUL");
  return s;
}

Napi::Buffer<char> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsBuffer()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Buffer");
  return info[i].As<Napi::Buffer<char>>();
}

// Optional credentials at position i: undefined/null means "as the process".
bool ArgCreds(const Napi::CallbackInfo& info, size_t i, Creds& out) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return false;
  Napi::Env env = info.Env();
  if (!info[i].IsObject()) throw Napi::TypeError::New(env, "creds must be an object");
  Napi::Object o = info[i].As<Napi::Object>();
  Napi::Value uid = o.Get("uid"), gid = o.Get("gid"), groups = o.Get("groups");
  if (!uid.IsNumber() || !gid.IsNumber()) throw Napi::TypeError::New(env, "creds.uid and creds.gid must be numbers");
  out.uid = uid.As<Napi::Number>().Uint32Value();
  out.gid = gid.As<Napi::Number>().Uint32Value();
  if (out.uid == (uid_t)-1 || out.gid == (gid_t)-1) throw Napi::TypeError::New(env, "creds: -1 is not an id");
  out.groups.clear();
  if (!groups.IsUndefined() && !groups.IsNull()) {
    if (!groups.IsArray()) throw Napi::TypeError::New(env, "creds.groups must be an array");
    Napi::Array a = groups.As<Napi::Array>();
    if (a.Length() > 65536) throw Napi::TypeError::New(env, "creds.groups: too many groups");
    for (uint32_t k = 0; k < a.Length(); k++) {
      Napi::Value g = a.Get(k);
      if (!g.IsNumber()) throw Napi::TypeError::New(env, "creds.groups must hold numbers");
      out.groups.push_back(g.As<Napi::Number>().Uint32Value());
    }
  }
  return true;
}

Napi::Value Submit(const Napi::CallbackInfo& info, const char* syscall, size_t credsArg, Exec exec,
                   Done done = nullptr) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<Job>(env);
  job->syscall = syscall;
  if (credsArg != SIZE_MAX) job->hasCreds = ArgCreds(info, credsArg, job->creds);
  job->exec = std::move(exec);
  job->done = std::move(done);
  Napi::Promise promise = job->deferred.Promise();
  PoolOf(info)->Submit(job.release());
  return promise;
}

constexpr size_t kNoCreds = SIZE_MAX;

inline long Ret(long r) { return r < 0 ? -errno : r; }

Napi::Value NumberResult(Napi::Env env, long r) { return Napi::Number::New(env, (double)r); }

// The kernel's handle on an fd by path: follows the magic link to whatever the fd refers to
// (including a symlink itself, never its target). Works for O_PATH fds.
std::string ProcPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

Napi::Object StatToJs(Napi::Env env, const struct stat& st) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("dev", Napi::BigInt::New(env, (uint64_t)st.st_dev));
  o.Set("ino", Napi::BigInt::New(env, (uint64_t)st.st_ino));
  o.Set("mode", Napi::Number::New(env, st.st_mode));
  o.Set("nlink", Napi::Number::New(env, (double)st.st_nlink));
  o.Set("uid", Napi::Number::New(env, st.st_uid));
  o.Set("gid", Napi::Number::New(env, st.st_gid));
  o.Set("rdev", Napi::Number::New(env, (double)st.st_rdev));
  o.Set("size", Napi::Number::New(env, (double)st.st_size));
  o.Set("blocks", Napi::Number::New(env, (double)st.st_blocks));
  o.Set("blksize", Napi::Number::New(env, (double)st.st_blksize));
  o.Set("atimeSec", Napi::Number::New(env, (double)st.st_atim.tv_sec));
  o.Set("atimeNsec", Napi::Number::New(env, (double)st.st_atim.tv_nsec));
  o.Set("mtimeSec", Napi::Number::New(env, (double)st.st_mtim.tv_sec));
  o.Set("mtimeNsec", Napi::Number::New(env, (double)st.st_mtim.tv_nsec));
  o.Set("ctimeSec", Napi::Number::New(env, (double)st.st_ctim.tv_sec));
  o.Set("ctimeNsec", Napi::Number::New(env, (double)st.st_ctim.tv_nsec));
  return o;
}

// Buffer for a result the worker filled: hand the memory over unless most of it is unused.
Napi::Value BufferResult(Napi::Env env, std::unique_ptr<char[]>& data, size_t cap, size_t n) {
  if (n == 0) return Napi::Buffer<char>::New(env, 0);
  if (n < cap / 2) return Napi::Buffer<char>::Copy(env, data.get(), n);
  return Napi::Buffer<char>::New(env, data.release(), n, [](Napi::Env, char* p) { delete[] p; });
}

// openat2 with RESOLVE_* appeared in Linux 5.6; remember once that it is missing.
std::atomic<bool> haveOpenat2{true};

long OpenBeneath(int dirfd, const char* name, int flags, mode_t mode) {
  if (haveOpenat2.load(std::memory_order_relaxed)) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    long r = syscall(SYS_openat2, dirfd, name, &how, sizeof how);
    if (r >= 0 || (errno != ENOSYS && errno != EPERM)) return Ret(r);
    // ENOSYS: kernel before 5.6. EPERM: may be a seccomp filter that does not know openat2.
    if (errno == ENOSYS) haveOpenat2.store(false);
  }
  return Ret(openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode));
}

// ---------------------------------------------------------------------------------------------
// The calls

// openat(dirfd, path, flags, mode, creds?) -> fd
Napi::Value Openat(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0);
  std::string path = ArgPath(info, 1, "path");
  int flags = (int)ArgInt(info, 2, "flags");
  mode_t mode = (mode_t)ArgInt(info, 3, "mode");
  return Submit(info, "openat", 4, [=] { return Ret(openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode)); },
                NumberResult);
}

// openat2(dirfd, path, flags, mode, resolve, creds?) -> fd
Napi::Value Openat2(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0);
  std::string path = ArgPath(info, 1, "path");
  int flags = (int)ArgInt(info, 2, "flags");
  mode_t mode = (mode_t)ArgInt(info, 3, "mode");
  uint64_t resolve = (uint64_t)ArgInt(info, 4, "resolve");
  return Submit(info, "openat2", 5, [=] {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = resolve;
    return Ret(syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how));
  }, NumberResult);
}

// reopen(fd, flags, creds?) -> fd: a real open of what an (O_PATH) fd refers to, through
// /proc/self/fd/N, so no name is resolved again. O_NOFOLLOW is dropped: it would refuse the
// magic link itself; the kernel still refuses to open a symlink inode (ELOOP).
Napi::Value Reopen(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int flags = (int)ArgInt(info, 1, "flags");
  return Submit(info, "open", 2, [=] {
    std::string p = ProcPath(fd);
    return Ret(open(p.c_str(), (flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_TMPFILE)) | O_CLOEXEC));
  }, NumberResult);
}

// lookupat(dirfd, name, creds?) -> {fd, stat}: O_PATH|O_NOFOLLOW open of one name plus fstat, in
// one trip. openat2 RESOLVE_BENEATH|NO_SYMLINKS|NO_MAGICLINKS is defence in depth: the backend
// already allows a single validated component only.
Napi::Value Lookupat(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0);
  std::string name = ArgPath(info, 1, "name");
  auto st = std::make_shared<struct stat>();
  return Submit(info, "openat", 2, [=] {
    long fd = OpenBeneath(dirfd, name.c_str(), O_PATH | O_NOFOLLOW, 0);
    if (fd < 0) return fd;
    if (fstatat((int)fd, "", st.get(), AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      long e = -errno;
      close((int)fd);
      return e;
    }
    return fd;
  }, [st](Napi::Env env, long fd) -> Napi::Value {
    Napi::Object o = Napi::Object::New(env);
    o.Set("fd", Napi::Number::New(env, (double)fd));
    o.Set("stat", StatToJs(env, *st));
    return o;
  });
}

// createat(dirfd, name, flags, mode, creds?) -> {fd, pathFd, stat}: creates `name` with
// O_CREAT|O_EXCL|O_NOFOLLOW, takes an O_PATH fd of exactly that inode (through /proc/self/fd, not
// the name again) and its stat, in one trip to the pool instead of three: a file create is the
// one metadata operation that needed all three, and each trip is a thread hand-off both ways.
Napi::Value Createat(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0);
  std::string name = ArgPath(info, 1, "name");
  int flags = (int)ArgInt(info, 2, "flags");
  mode_t mode = (mode_t)ArgInt(info, 3, "mode");
  struct Out {
    long pathFd = -1;
    struct stat st;
  };
  auto out = std::make_shared<Out>();
  return Submit(info, "openat", 4, [=] {
    long fd = Ret(openat(dirfd, name.c_str(), flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (fd < 0) return fd;
    std::string p = ProcPath((int)fd);
    long pathFd = Ret(open(p.c_str(), O_PATH | O_CLOEXEC));
    if (pathFd < 0 || fstatat((int)pathFd, "", &out->st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      long e = pathFd < 0 ? pathFd : -errno;
      if (pathFd >= 0) close((int)pathFd);
      close((int)fd);
      return e;
    }
    out->pathFd = pathFd;
    return fd;
  }, [out](Napi::Env env, long fd) -> Napi::Value {
    Napi::Object o = Napi::Object::New(env);
    o.Set("fd", Napi::Number::New(env, (double)fd));
    o.Set("pathFd", Napi::Number::New(env, (double)out->pathFd));
    o.Set("stat", StatToJs(env, out->st));
    return o;
  });
}

// close(fd): on network file systems close can block (NFS flushes), so it is async too.
Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  return Submit(info, "close", kNoCreds, [=] { return Ret(close(fd)); });
}

// fstatat(dirfd, path, flags, creds?) -> Stat
Napi::Value Fstatat(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0);
  std::string path = ArgPath(info, 1, "path");
  int flags = (int)ArgInt(info, 2, "flags");
  auto st = std::make_shared<struct stat>();
  return Submit(info, "fstatat", 3, [=] { return Ret(fstatat(dirfd, path.c_str(), st.get(), flags)); },
                [st](Napi::Env env, long) -> Napi::Value { return StatToJs(env, *st); });
}

// mkdirat(dirfd, path, mode, creds?)
Napi::Value Mkdirat(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0);
  std::string path = ArgPath(info, 1, "path");
  mode_t mode = (mode_t)ArgInt(info, 2, "mode");
  return Submit(info, "mkdirat", 3, [=] { return Ret(mkdirat(dirfd, path.c_str(), mode)); });
}

// mknodat(dirfd, path, mode, rdev, creds?)
Napi::Value Mknodat(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0);
  std::string path = ArgPath(info, 1, "path");
  mode_t mode = (mode_t)ArgInt(info, 2, "mode");
  dev_t rdev = (dev_t)ArgInt(info, 3, "rdev");
  return Submit(info, "mknodat", 4, [=] { return Ret(mknodat(dirfd, path.c_str(), mode, rdev)); });
}

// symlinkat(target, dirfd, path, creds?)
Napi::Value Symlinkat(const Napi::CallbackInfo& info) {
  std::string target = ArgPath(info, 0, "target");
  int dirfd = ArgFd(info, 1);
  std::string path = ArgPath(info, 2, "path");
  return Submit(info, "symlinkat", 3, [=] { return Ret(symlinkat(target.c_str(), dirfd, path.c_str())); });
}

// readlinkat(dirfd, path, creds?) -> Buffer. With an O_PATH fd of a symlink and path "", reads it.
Napi::Value Readlinkat(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0);
  std::string path = ArgPath(info, 1, "path");
  constexpr size_t cap = PATH_MAX;
  auto buf = std::make_shared<std::unique_ptr<char[]>>(new char[cap]);
  return Submit(info, "readlinkat", 2, [=] {
    long n = Ret(readlinkat(dirfd, path.c_str(), buf->get(), cap));
    return n >= (long)cap ? -ENAMETOOLONG : n;
  }, [buf](Napi::Env env, long n) { return BufferResult(env, *buf, cap, (size_t)n); });
}

// unlinkat(dirfd, path, flags, creds?)
Napi::Value Unlinkat(const Napi::CallbackInfo& info) {
  int dirfd = ArgFd(info, 0);
  std::string path = ArgPath(info, 1, "path");
  int flags = (int)ArgInt(info, 2, "flags");
  return Submit(info, "unlinkat", 3, [=] { return Ret(unlinkat(dirfd, path.c_str(), flags)); });
}

// renameat2(olddirfd, oldpath, newdirfd, newpath, flags, creds?)
Napi::Value Renameat2(const Napi::CallbackInfo& info) {
  int olddirfd = ArgFd(info, 0);
  std::string oldpath = ArgPath(info, 1, "oldpath");
  int newdirfd = ArgFd(info, 2);
  std::string newpath = ArgPath(info, 3, "newpath");
  unsigned flags = (unsigned)ArgInt(info, 4, "flags");
  return Submit(info, "renameat2", 5, [=] {
    return Ret(renameat2(olddirfd, oldpath.c_str(), newdirfd, newpath.c_str(), flags));
  });
}

// linkat(olddirfd, oldpath, newdirfd, newpath, flags, creds?)
Napi::Value Linkat(const Napi::CallbackInfo& info) {
  int olddirfd = ArgFd(info, 0);
  std::string oldpath = ArgPath(info, 1, "oldpath");
  int newdirfd = ArgFd(info, 2);
  std::string newpath = ArgPath(info, 3, "newpath");
  int flags = (int)ArgInt(info, 4, "flags");
  return Submit(info, "linkat", 5, [=] {
    return Ret(linkat(olddirfd, oldpath.c_str(), newdirfd, newpath.c_str(), flags));
  });
}

// linkfd(fd, newdirfd, newpath, creds?): a new name for what fd refers to (may be O_PATH, may be a
// symlink). AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH (gone once fsuid != 0); then the
// /proc/self/fd/N magic link with AT_SYMLINK_FOLLOW, which lands on the inode itself.
Napi::Value Linkfd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int newdirfd = ArgFd(info, 1);
  std::string newpath = ArgPath(info, 2, "newpath");
  return Submit(info, "linkat", 3, [=] {
    if (linkat(fd, "", newdirfd, newpath.c_str(), AT_EMPTY_PATH) == 0) return 0L;
    if (errno != ENOENT) return (long)-errno;
    std::string p = ProcPath(fd);
    return Ret(linkat(AT_FDCWD, p.c_str(), newdirfd, newpath.c_str(), AT_SYMLINK_FOLLOW));
  });
}

// fchmodfd(fd, mode, creds?): chmod of what fd refers to, never through a symlink. fchmodat2
// (Linux 6.6) takes AT_EMPTY_PATH on O_PATH fds and answers EOPNOTSUPP for a symlink; older
// kernels get the /proc/self/fd path (callers must not pass a symlink's fd there).
Napi::Value Fchmodfd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  mode_t mode = (mode_t)ArgInt(info, 1, "mode");
  return Submit(info, "fchmodat", 2, [=] {
    if (syscall(SYS_fchmodat2, fd, "", mode, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0) return 0L;
    if (errno != ENOSYS && errno != EINVAL) return (long)-errno;
    std::string p = ProcPath(fd);
    return Ret(chmod(p.c_str(), mode));
  });
}

// fchownfd(fd, uid, gid, creds?): -1 leaves an id unchanged; a symlink itself is changed.
Napi::Value Fchownfd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uid_t uid = (uid_t)ArgInt(info, 1, "uid");
  gid_t gid = (gid_t)ArgInt(info, 2, "gid");
  return Submit(info, "fchownat", 3, [=] {
    return Ret(fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
  });
}

// utimensfd(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec, creds?): nsec may be UTIME_NOW or
// UTIME_OMIT. AT_EMPTY_PATH (Linux 5.8+) on the fd itself, else the /proc/self/fd path.
Napi::Value Utimensfd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  struct timespec ts[2];
  ts[0].tv_sec = (time_t)ArgInt(info, 1, "atimeSec");
  ts[0].tv_nsec = (long)ArgInt(info, 2, "atimeNsec");
  ts[1].tv_sec = (time_t)ArgInt(info, 3, "mtimeSec");
  ts[1].tv_nsec = (long)ArgInt(info, 4, "mtimeNsec");
  return Submit(info, "utimensat", 5, [=] {
    if (syscall(SYS_utimensat, fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0) return 0L;
    if (errno != EINVAL) return (long)-errno;
    std::string p = ProcPath(fd);
    return Ret(utimensat(AT_FDCWD, p.c_str(), ts, 0));
  });
}

// ftruncate(fd, length, creds?)
Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  off_t len = (off_t)ArgInt(info, 1, "length");
  return Submit(info, "ftruncate", 2, [=] { return Ret(ftruncate(fd, len)); });
}

// pread(fd, size, offset) -> Buffer (allocated by the worker; shorter at end of file)
Napi::Value Pread(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int64_t size = ArgInt(info, 1, "size");
  off_t off = (off_t)ArgInt(info, 2, "offset");
  if (size < 0 || size > (1LL << 30)) throw Napi::RangeError::New(info.Env(), "size out of range");
  auto buf = std::make_shared<std::unique_ptr<char[]>>();
  return Submit(info, "pread", kNoCreds, [=] {
    buf->reset(new char[size > 0 ? size : 1]);
    return Ret(pread(fd, buf->get(), (size_t)size, off));
  }, [buf, size](Napi::Env env, long n) { return BufferResult(env, *buf, (size_t)size, (size_t)n); });
}

// pwrite(fd, buffer, offset, creds?) -> bytes written. Credentials matter: a write by a
// non-root caller clears set-user-ID bits, as the kernel decides.
Napi::Value Pwrite(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  Napi::Buffer<char> b = ArgBuffer(info, 1, "buffer");
  off_t off = (off_t)ArgInt(info, 2, "offset");
  // Keep the Buffer alive until the job is done; the reference dies with the job, on this thread.
  auto ref = std::make_shared<Napi::Reference<Napi::Buffer<char>>>(Napi::Persistent(b));
  const char* data = b.Data();
  size_t len = b.Length();
  return Submit(info, "pwrite", 3, [=] { return Ret(pwrite(fd, data, len, off)); },
                [ref](Napi::Env env, long n) { return NumberResult(env, n); });
}

// fsync(fd, datasync)
Napi::Value Fsync(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool datasync = info[1].ToBoolean().Value();
  return Submit(info, datasync ? "fdatasync" : "fsync", kNoCreds,
                [=] { return Ret(datasync ? fdatasync(fd) : fsync(fd)); });
}

// flush(fd): close a duplicate, so the file system sees a close (NFS writes back and reports
// errors such as EDQUOT here) while the handle stays open: close-to-open consistency.
Napi::Value Flush(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  return Submit(info, "close", kNoCreds, [=] {
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) return (long)-errno;
    return Ret(close(d));
  });
}

// fallocate(fd, mode, offset, length, creds?)
Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int mode = (int)ArgInt(info, 1, "mode");
  off_t off = (off_t)ArgInt(info, 2, "offset");
  off_t len = (off_t)ArgInt(info, 3, "length");
  return Submit(info, "fallocate", 4, [=] { return Ret(fallocate(fd, mode, off, len)); });
}

// copyFileRange(fdIn, offIn, fdOut, offOut, length, flags, creds?) -> bytes copied
Napi::Value CopyFileRange(const Napi::CallbackInfo& info) {
  int fdIn = ArgFd(info, 0);
  loff_t offIn = (loff_t)ArgInt(info, 1, "offIn");
  int fdOut = ArgFd(info, 2);
  loff_t offOut = (loff_t)ArgInt(info, 3, "offOut");
  size_t len = (size_t)ArgInt(info, 4, "length");
  unsigned flags = (unsigned)ArgInt(info, 5, "flags");
  return Submit(info, "copy_file_range", 6, [=]() mutable {
    return Ret(copy_file_range(fdIn, &offIn, fdOut, &offOut, len, flags));
  }, NumberResult);
}

// lseek(fd, offset, whence) -> new offset (SEEK_DATA / SEEK_HOLE included)
Napi::Value Lseek(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  off_t off = (off_t)ArgInt(info, 1, "offset");
  int whence = (int)ArgInt(info, 2, "whence");
  return Submit(info, "lseek", kNoCreds, [=] { return Ret(lseek(fd, off, whence)); }, NumberResult);
}

// fstatfs(fd) -> StatFs (O_PATH fds work)
Napi::Value Fstatfs(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  auto sf = std::make_shared<struct statfs>();
  return Submit(info, "fstatfs", kNoCreds, [=] { return Ret(fstatfs(fd, sf.get())); },
                [sf](Napi::Env env, long) -> Napi::Value {
    Napi::Object o = Napi::Object::New(env);
    o.Set("type", Napi::Number::New(env, (double)sf->f_type));
    o.Set("bsize", Napi::Number::New(env, (double)sf->f_bsize));
    o.Set("frsize", Napi::Number::New(env, (double)sf->f_frsize));
    o.Set("blocks", Napi::Number::New(env, (double)sf->f_blocks));
    o.Set("bfree", Napi::Number::New(env, (double)sf->f_bfree));
    o.Set("bavail", Napi::Number::New(env, (double)sf->f_bavail));
    o.Set("files", Napi::Number::New(env, (double)sf->f_files));
    o.Set("ffree", Napi::Number::New(env, (double)sf->f_ffree));
    o.Set("namemax", Napi::Number::New(env, (double)sf->f_namelen));
    o.Set("flags", Napi::Number::New(env, (double)sf->f_flags));
    return o;
  });
}

struct Dirent {
  std::string name;
  uint64_t ino;
  int64_t off;
  unsigned char type;
};

struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// getdents(fd, offset, maxEntries) -> [{name: Buffer, ino: bigint, type, off: bigint}]
// Seeks the directory fd to `offset` (0 or an `off` returned earlier) first, so a listing can be
// resumed from any entry; callers must not run two of these on one fd at once.
Napi::Value Getdents(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  off_t off = (off_t)ArgInt(info, 1, "offset");
  int64_t max = ArgInt(info, 2, "maxEntries");
  if (max <= 0) max = 1;
  auto out = std::make_shared<std::vector<Dirent>>();
  return Submit(info, "getdents64", kNoCreds, [=] {
    if (lseek(fd, off, SEEK_SET) < 0) return (long)-errno;
    constexpr size_t kBuf = 64 * 1024;
    std::unique_ptr<char[]> buf(new char[kBuf]);
    while ((int64_t)out->size() < max) {
      long n = syscall(SYS_getdents64, fd, buf.get(), kBuf);
      if (n < 0) return (long)-errno;
      if (n == 0) break;
      for (long pos = 0; pos < n && (int64_t)out->size() < max;) {
        auto* d = reinterpret_cast<LinuxDirent64*>(buf.get() + pos);
        out->push_back(Dirent{d->d_name, d->d_ino, d->d_off, d->d_type});
        pos += d->d_reclen;
      }
    }
    return 0L;
  }, [out](Napi::Env env, long) -> Napi::Value {
    Napi::Array a = Napi::Array::New(env, out->size());
    for (size_t i = 0; i < out->size(); i++) {
      const Dirent& d = (*out)[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", Napi::Buffer<char>::Copy(env, d.name.data(), d.name.size()));
      o.Set("ino", Napi::BigInt::New(env, d.ino));
      o.Set("type", Napi::Number::New(env, d.type));
      o.Set("off", Napi::BigInt::New(env, d.off));
      a.Set((uint32_t)i, o);
    }
    return a;
  });
}

// Extended attributes go through /proc/self/fd/N so O_PATH fds (and so every node) work; the
// magic link resolves to the inode itself. Sizes are capped at the kernel's XATTR_SIZE_MAX.
constexpr size_t kXattrMax = 65536;

// getxattr(fd, name, size, creds?) -> Buffer, or the value's length when size is 0
Napi::Value Getxattr(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  std::string name = ArgPath(info, 1, "name");
  size_t size = std::min((size_t)ArgInt(info, 2, "size"), kXattrMax);
  auto buf = std::make_shared<std::unique_ptr<char[]>>();
  return Submit(info, "getxattr", 3, [=] {
    std::string p = ProcPath(fd);
    if (size == 0) return Ret(getxattr(p.c_str(), name.c_str(), nullptr, 0));
    buf->reset(new char[size]);
    return Ret(getxattr(p.c_str(), name.c_str(), buf->get(), size));
  }, [buf, size](Napi::Env env, long n) -> Napi::Value {
    if (size == 0) return NumberResult(env, n);
    return BufferResult(env, *buf, size, (size_t)n);
  });
}

// listxattr(fd, size, creds?) -> Buffer of NUL-terminated names, or the length when size is 0
Napi::Value Listxattr(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  size_t size = std::min((size_t)ArgInt(info, 1, "size"), kXattrMax);
  auto buf = std::make_shared<std::unique_ptr<char[]>>();
  return Submit(info, "listxattr", 2, [=] {
    std::string p = ProcPath(fd);
    if (size == 0) return Ret(listxattr(p.c_str(), nullptr, 0));
    buf->reset(new char[size]);
    return Ret(listxattr(p.c_str(), buf->get(), size));
  }, [buf, size](Napi::Env env, long n) -> Napi::Value {
    if (size == 0) return NumberResult(env, n);
    return BufferResult(env, *buf, size, (size_t)n);
  });
}

// setxattr(fd, name, value, flags, creds?)
Napi::Value Setxattr(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  std::string name = ArgPath(info, 1, "name");
  Napi::Buffer<char> v = ArgBuffer(info, 2, "value");
  int flags = (int)ArgInt(info, 3, "flags");
  std::string value(v.Data(), v.Length());  // small (<= 64 KiB): a copy is simpler than a reference
  return Submit(info, "setxattr", 4, [=] {
    std::string p = ProcPath(fd);
    return Ret(setxattr(p.c_str(), name.c_str(), value.data(), value.size(), flags));
  });
}

// removexattr(fd, name, creds?)
Napi::Value Removexattr(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  std::string name = ArgPath(info, 1, "name");
  return Submit(info, "removexattr", 2, [=] {
    std::string p = ProcPath(fd);
    return Ret(removexattr(p.c_str(), name.c_str()));
  });
}

// faccess(fd, mask, creds?): access check on what fd refers to, against the fs credentials
// (AT_EACCESS), so the caller's uid/gid/groups decide. faccessat2 is Linux 5.8+.
Napi::Value Faccess(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int mask = (int)ArgInt(info, 1, "mask");
  return Submit(info, "faccessat2", 2, [=] {
    return Ret(syscall(SYS_faccessat2, fd, "", mask, AT_EMPTY_PATH | AT_EACCESS));
  });
}

// setThreads(n): how many pool threads may run at once (they start on demand).
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  int64_t n = ArgInt(info, 0, "n");
  if (n < 1 || n > 1024) throw Napi::RangeError::New(info.Env(), "threads: 1..1024");
  PoolOf(info)->SetThreads((size_t)n);
  return info.Env().Undefined();
}

Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  auto set = [&](const char* k, double v) { c.Set(k, Napi::Number::New(env, v)); };
  set("O_RDONLY", O_RDONLY); set("O_WRONLY", O_WRONLY); set("O_RDWR", O_RDWR); set("O_ACCMODE", O_ACCMODE);
  set("O_CREAT", O_CREAT); set("O_EXCL", O_EXCL); set("O_TRUNC", O_TRUNC); set("O_APPEND", O_APPEND);
  set("O_NONBLOCK", O_NONBLOCK); set("O_DIRECTORY", O_DIRECTORY); set("O_NOFOLLOW", O_NOFOLLOW);
  set("O_PATH", O_PATH); set("O_CLOEXEC", O_CLOEXEC); set("O_DIRECT", O_DIRECT); set("O_SYNC", O_SYNC);
  set("O_DSYNC", O_DSYNC); set("O_NOATIME", O_NOATIME); set("O_NOCTTY", O_NOCTTY); set("O_TMPFILE", O_TMPFILE);
  set("O_LARGEFILE", 0100000);  // the kernel's value; glibc defines O_LARGEFILE as 0 on 64-bit
  set("AT_FDCWD", AT_FDCWD); set("AT_EMPTY_PATH", AT_EMPTY_PATH); set("AT_SYMLINK_NOFOLLOW", AT_SYMLINK_NOFOLLOW);
  set("AT_SYMLINK_FOLLOW", AT_SYMLINK_FOLLOW); set("AT_REMOVEDIR", AT_REMOVEDIR); set("AT_EACCESS", AT_EACCESS);
  set("RESOLVE_BENEATH", RESOLVE_BENEATH); set("RESOLVE_NO_SYMLINKS", RESOLVE_NO_SYMLINKS);
  set("RESOLVE_NO_MAGICLINKS", RESOLVE_NO_MAGICLINKS); set("RESOLVE_NO_XDEV", RESOLVE_NO_XDEV);
  set("RESOLVE_IN_ROOT", RESOLVE_IN_ROOT);
  set("RENAME_NOREPLACE", RENAME_NOREPLACE); set("RENAME_EXCHANGE", RENAME_EXCHANGE);
  set("RENAME_WHITEOUT", RENAME_WHITEOUT);
  set("UTIME_NOW", UTIME_NOW); set("UTIME_OMIT", UTIME_OMIT);
  set("SEEK_SET", SEEK_SET); set("SEEK_CUR", SEEK_CUR); set("SEEK_END", SEEK_END);
  set("SEEK_DATA", SEEK_DATA); set("SEEK_HOLE", SEEK_HOLE);
  set("FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE); set("FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  set("FALLOC_FL_COLLAPSE_RANGE", FALLOC_FL_COLLAPSE_RANGE); set("FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  set("FALLOC_FL_INSERT_RANGE", FALLOC_FL_INSERT_RANGE); set("FALLOC_FL_UNSHARE_RANGE", FALLOC_FL_UNSHARE_RANGE);
  set("XATTR_CREATE", XATTR_CREATE); set("XATTR_REPLACE", XATTR_REPLACE);
  set("S_IFMT", S_IFMT); set("S_IFREG", S_IFREG); set("S_IFDIR", S_IFDIR); set("S_IFLNK", S_IFLNK);
  set("S_IFCHR", S_IFCHR); set("S_IFBLK", S_IFBLK); set("S_IFIFO", S_IFIFO); set("S_IFSOCK", S_IFSOCK);
  return c;
}

}  // namespace

void InitSys(Napi::Env env, Napi::Object exports) {
  Pool* pool = new Pool(env);  // freed by its env cleanup hook
  Napi::Object sys = Napi::Object::New(env);
  auto def = [&](const char* name, Napi::Function::Callback fn) {
    sys.Set(name, Napi::Function::New(env, fn, name, pool));
  };
  def("openat", Openat);
  def("openat2", Openat2);
  def("reopen", Reopen);
  def("lookupat", Lookupat);
  def("createat", Createat);
  def("close", Close);
  def("fstatat", Fstatat);
  def("mkdirat", Mkdirat);
  def("mknodat", Mknodat);
  def("symlinkat", Symlinkat);
  def("readlinkat", Readlinkat);
  def("unlinkat", Unlinkat);
  def("renameat2", Renameat2);
  def("linkat", Linkat);
  def("linkfd", Linkfd);
  def("fchmodfd", Fchmodfd);
  def("fchownfd", Fchownfd);
  def("utimensfd", Utimensfd);
  def("ftruncate", Ftruncate);
  def("pread", Pread);
  def("pwrite", Pwrite);
  def("fsync", Fsync);
  def("flush", Flush);
  def("fallocate", Fallocate);
  def("copyFileRange", CopyFileRange);
  def("lseek", Lseek);
  def("fstatfs", Fstatfs);
  def("getdents", Getdents);
  def("getxattr", Getxattr);
  def("listxattr", Listxattr);
  def("setxattr", Setxattr);
  def("removexattr", Removexattr);
  def("faccess", Faccess);
  def("setThreads", SetThreads);
  sys.Set("constants", Constants(env));
  exports.Set("sys", sys);
}
