// FuseSession: the JS face of a libfuse3 low-level session (see fuse_internal.h for the threads).
//
//   new FuseSession(mountpoint, fuseArgs, config, onRequest, onExit)
//   mount(): Promise<void>                 mounts on the loop thread, then serves requests
//   reply*(id, ...): number                0 or -errno from libfuse (the kernel may have given up)
//   notify*(...): Promise<number>          0 or a positive errno, served by the notify thread
//   unmount(lazy): Promise<number>         0 or a positive errno; 'exit' follows when the mount goes
#include "addon.h"
#include "fuse_internal.h"

#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

extern char** environ;

namespace dvfuse {

namespace {

double Num(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0;
}

double NumArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool Flag(const Napi::Object& o, const char* key) { return o.Get(key).ToBoolean().Value(); }

// A name or payload given as Buffer/Uint8Array (or string, as UTF-8).
std::string Bytes(Napi::Env env, Napi::Value v) {
  if (v.IsTypedArray()) {
    auto a = v.As<Napi::Uint8Array>();
    return std::string(reinterpret_cast<const char*>(a.Data()), a.ByteLength());
  }
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  throw Napi::TypeError::New(env, "expected a Buffer");
}

void ToTimespec(const Napi::Object& o, const char* key, timespec& ts) {
  Napi::Value v = o.Get(key);
  if (!v.IsObject()) return;
  auto t = v.As<Napi::Object>();
  ts.tv_sec = static_cast<time_t>(Num(t, "sec"));
  ts.tv_nsec = static_cast<long>(Num(t, "nsec"));
}

void ToStat(Napi::Env env, Napi::Value v, struct stat& st) {
  if (!v.IsObject()) throw Napi::TypeError::New(env, "expected an Attr object");
  auto a = v.As<Napi::Object>();
  st.st_ino = static_cast<ino_t>(Num(a, "ino"));
  st.st_mode = static_cast<mode_t>(Num(a, "mode"));
  st.st_nlink = static_cast<nlink_t>(Num(a, "nlink"));
  st.st_uid = static_cast<uid_t>(Num(a, "uid"));
  st.st_gid = static_cast<gid_t>(Num(a, "gid"));
  st.st_rdev = static_cast<dev_t>(Num(a, "rdev"));
  st.st_size = static_cast<off_t>(Num(a, "size"));
  st.st_blocks = static_cast<blkcnt_t>(Num(a, "blocks"));
  st.st_blksize = static_cast<blksize_t>(Num(a, "blksize"));
  ToTimespec(a, "atime", st.st_atim);
  ToTimespec(a, "mtime", st.st_mtim);
  ToTimespec(a, "ctime", st.st_ctim);
}

// Entry -> fuse_entry_param; null/undefined is a negative entry (node id 0, cached entryTimeout).
void ToEntry(Napi::Env env, Napi::Value v, double entryTimeout, double attrTimeout, fuse_entry_param& e) {
  memset(&e, 0, sizeof e);
  e.entry_timeout = entryTimeout;
  e.attr_timeout = attrTimeout;
  if (v.IsNull() || v.IsUndefined()) return;
  if (!v.IsObject()) throw Napi::TypeError::New(env, "expected an Entry object");
  auto o = v.As<Napi::Object>();
  e.ino = static_cast<fuse_ino_t>(Num(o, "nodeId"));
  e.generation = static_cast<uint64_t>(Num(o, "generation"));
  ToStat(env, o.Get("attr"), e.attr);
}

void ToOpen(Napi::Env env, Napi::Value v, fuse_file_info& fi) {
  memset(&fi, 0, sizeof fi);
  if (!v.IsObject()) throw Napi::TypeError::New(env, "expected an OpenResult object");
  auto o = v.As<Napi::Object>();
  fi.fh = static_cast<uint64_t>(Num(o, "fh"));
  fi.keep_cache = Flag(o, "keepCache");
  fi.direct_io = Flag(o, "directIo");
  fi.cache_readdir = Flag(o, "cacheDir");
  fi.nonseekable = Flag(o, "nonseekable");
  fi.noflush = Flag(o, "noflush");
}

Napi::Value ErrnoError(Napi::Env env, int err, const std::string& what) {
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  return e.Value();
}

// Runs fusermount3 (for a non-root agent); it reports no errno, EBUSY is the usual cause.
int RunFusermount(const std::string& mp, bool lazy) {
  std::vector<const char*> argv = {"fusermount3", "-u", "-q"};
  if (lazy) argv.push_back("-z");
  argv.push_back("--");
  argv.push_back(mp.c_str());
  argv.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid;
  int err = posix_spawnp(&pid, "fusermount3", nullptr, &attr, const_cast<char* const*>(argv.data()), environ);
  posix_spawnattr_destroy(&attr);
  if (err) return err;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EBUSY;
}

// Own thread: a synchronous umount may flush dirty pages through this very session.
void UnmountThread(Core* core, std::string mp, bool lazy, napi_deferred d) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  int err = 0;
  if (geteuid() == 0) {
    if (umount2(mp.c_str(), (lazy ? MNT_DETACH : 0) | UMOUNT_NOFOLLOW) != 0) err = errno;
  } else {
    err = RunFusermount(mp, lazy);
  }
  core->Post(new ResultEvent(d, err));
  if (!core->tsfnClosed) core->tsfn.Release();
}

}  // namespace

class FuseSession : public Napi::ObjectWrap<FuseSession> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "FuseSession", {
      InstanceMethod<&FuseSession::Mount>("mount"),
      InstanceMethod<&FuseSession::Unmount>("unmount"),
      InstanceAccessor<&FuseSession::GetState>("state"),
      InstanceAccessor<&FuseSession::GetPending>("pending"),
      InstanceMethod<&FuseSession::ReplyErr>("replyErr"),
      InstanceMethod<&FuseSession::ReplyEntry>("replyEntry"),
      InstanceMethod<&FuseSession::ReplyCreate>("replyCreate"),
      InstanceMethod<&FuseSession::ReplyAttr>("replyAttr"),
      InstanceMethod<&FuseSession::ReplyReadlink>("replyReadlink"),
      InstanceMethod<&FuseSession::ReplyOpen>("replyOpen"),
      InstanceMethod<&FuseSession::ReplyWrite>("replyWrite"),
      InstanceMethod<&FuseSession::ReplyData>("replyData"),
      InstanceMethod<&FuseSession::ReplyStatfs>("replyStatfs"),
      InstanceMethod<&FuseSession::ReplyXattr>("replyXattr"),
      InstanceMethod<&FuseSession::ReplyDirents>("replyDirents"),
      InstanceMethod<&FuseSession::ReplyLseek>("replyLseek"),
      InstanceMethod<&FuseSession::NotifyInvalEntry>("notifyInvalEntry"),
      InstanceMethod<&FuseSession::NotifyExpireEntry>("notifyExpireEntry"),
      InstanceMethod<&FuseSession::NotifyInvalInode>("notifyInvalInode"),
      InstanceMethod<&FuseSession::NotifyDelete>("notifyDelete"),
      InstanceMethod<&FuseSession::NotifyStore>("notifyStore"),
    });
  }

  // (mountpoint: string, args: string[], config: object, onRequest: fn, onExit: fn)
  explicit FuseSession(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FuseSession>(info), core_(new Core) {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsArray() || !info[2].IsObject() || !info[3].IsFunction() ||
        !info[4].IsFunction())
      throw Napi::TypeError::New(env, "FuseSession(mountpoint, args, config, onRequest, onExit)");
    core_->mountpoint = info[0].As<Napi::String>().Utf8Value();
    auto cfg = info[2].As<Napi::Object>();
    if (Num(cfg, "maxWrite") > 0) core_->cfg.maxWrite = static_cast<uint32_t>(Num(cfg, "maxWrite"));
    core_->cfg.maxRead = static_cast<uint32_t>(Num(cfg, "maxRead"));
    core_->cfg.maxReadahead = static_cast<uint32_t>(Num(cfg, "maxReadahead"));
    core_->cfg.maxBackground = static_cast<uint32_t>(Num(cfg, "maxBackground"));
    core_->cfg.writeback = Flag(cfg, "writeback");
    core_->cfg.groups = !cfg.Has("groups") || Flag(cfg, "groups");
    onRequest_ = Napi::Persistent(info[3].As<Napi::Function>());
    onExit_ = Napi::Persistent(info[4].As<Napi::Function>());

    fuse_args args = FUSE_ARGS_INIT(0, nullptr);
    fuse_opt_add_arg(&args, "dirvisor");
    auto list = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++)
      fuse_opt_add_arg(&args, list.Get(i).ToString().Utf8Value().c_str());
    core_->se = fuse_session_new(&args, LowlevelOps(), sizeof(fuse_lowlevel_ops), core_.get());
    fuse_opt_free_args(&args);
    if (!core_->se) throw Napi::Error::New(env, "fuse_session_new failed (invalid options? see stderr)");
    core_->owner = this;
  }

  ~FuseSession() override {
    core_->owner = nullptr;
    if (core_->loop.joinable() || (core_->tsfnCreated && !core_->tsfnFinalized)) {
      // Only when Node tears down while mounted: the threads still use Core. The process is ending.
      if (core_->loop.joinable()) core_->loop.detach();
      core_.release();
      return;
    }
    if (core_->se) fuse_session_destroy(core_->se);
  }

  void OnRequest(Napi::Env env, Request& r);
  void OnMounted(Napi::Env env, int err);
  void OnExit(Napi::Env env, bool wasMounted);

 private:
  enum class State { IDLE, MOUNTING, MOUNTED, CLOSED };
  struct Pending {
    fuse_req_t req;
    Op op;
    uint64_t size;
  };
  // A request taken out of the pending table; answered EIO if a reply method throws before sending.
  struct Taken {
    fuse_req_t req = nullptr;
    Op op = Op::COUNT;
    uint64_t size = 0;
    Taken() = default;
    Taken(const Taken&) = delete;
    Taken& operator=(const Taken&) = delete;
    ~Taken() {
      if (req) fuse_reply_err(req, EIO);
    }
    fuse_req_t release() {
      fuse_req_t r = req;
      req = nullptr;
      return r;
    }
  };

  // false: the session has ended and the request was already failed (reply methods return -ENOTCONN).
  bool Take(const Napi::CallbackInfo& info, Taken& t) {
    uint32_t id = static_cast<uint32_t>(NumArg(info, 0));
    auto it = pending_.find(id);
    if (it == pending_.end()) {
      if (state_ == State::CLOSED) return false;
      throw Napi::Error::New(info.Env(), "fuse: unknown or already answered request " + std::to_string(id));
    }
    t.req = it->second.req;
    t.op = it->second.op;
    t.size = it->second.size;
    pending_.erase(it);
    return true;
  }

  static Napi::Value Result(Napi::Env env, int res) { return Napi::Number::New(env, res); }

  Napi::Value Mount(const Napi::CallbackInfo& info);
  Napi::Value Unmount(const Napi::CallbackInfo& info);
  Napi::Value Notify(const Napi::CallbackInfo& info, std::unique_ptr<NotifyJob> job);

  Napi::Value GetState(const Napi::CallbackInfo& info) {
    static const char* names[] = {"idle", "mounting", "mounted", "closed"};
    return Napi::String::New(info.Env(), names[static_cast<int>(state_)]);
  }
  Napi::Value GetPending(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(pending_.size()));
  }

#define TAKE(t)                                             \
  Taken t;                                                  \
  if (!Take(info, t)) return Result(info.Env(), -ENOTCONN);

  // replyErr(id, errno): errno 0 is the plain success reply (unlink, flush, setxattr...).
  Napi::Value ReplyErr(const Napi::CallbackInfo& info) {
    TAKE(t);
    int err = static_cast<int>(NumArg(info, 1));
    if (err < 0 || err >= 1000) err = EIO;  // libfuse rejects anything else
    return Result(info.Env(), fuse_reply_err(t.release(), err));
  }

  // replyEntry(id, entry | null, entryTimeout, attrTimeout)
  Napi::Value ReplyEntry(const Napi::CallbackInfo& info) {
    TAKE(t);
    fuse_entry_param e;
    ToEntry(info.Env(), info[1], NumArg(info, 2), NumArg(info, 3), e);
    return Result(info.Env(), fuse_reply_entry(t.release(), &e));
  }

  // replyCreate(id, entry, entryTimeout, attrTimeout, open)
  Napi::Value ReplyCreate(const Napi::CallbackInfo& info) {
    TAKE(t);
    fuse_entry_param e;
    ToEntry(info.Env(), info[1], NumArg(info, 2), NumArg(info, 3), e);
    fuse_file_info fi;
    ToOpen(info.Env(), info[4], fi);
    return Result(info.Env(), fuse_reply_create(t.release(), &e, &fi));
  }

  // replyAttr(id, attr, attrTimeout)
  Napi::Value ReplyAttr(const Napi::CallbackInfo& info) {
    TAKE(t);
    struct stat st;
    memset(&st, 0, sizeof st);
    ToStat(info.Env(), info[1], st);
    return Result(info.Env(), fuse_reply_attr(t.release(), &st, NumArg(info, 2)));
  }

  // replyReadlink(id, target)
  Napi::Value ReplyReadlink(const Napi::CallbackInfo& info) {
    TAKE(t);
    std::string target = Bytes(info.Env(), info[1]);
    return Result(info.Env(), fuse_reply_readlink(t.release(), target.c_str()));
  }

  // replyOpen(id, { fh, keepCache, directIo, cacheDir, nonseekable, noflush })
  Napi::Value ReplyOpen(const Napi::CallbackInfo& info) {
    TAKE(t);
    fuse_file_info fi;
    ToOpen(info.Env(), info[1], fi);
    return Result(info.Env(), fuse_reply_open(t.release(), &fi));
  }

  // replyWrite(id, count)
  Napi::Value ReplyWrite(const Napi::CallbackInfo& info) {
    TAKE(t);
    return Result(info.Env(), fuse_reply_write(t.release(), static_cast<size_t>(NumArg(info, 1))));
  }

  // replyData(id, buffer): read, getxattr, listxattr data; cut to the size the kernel asked for.
  Napi::Value ReplyData(const Napi::CallbackInfo& info) {
    TAKE(t);
    if (!info[1].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "replyData: expected a Buffer");
    auto a = info[1].As<Napi::Uint8Array>();
    size_t n = a.ByteLength();
    if ((t.op == Op::READ || t.op == Op::GETXATTR || t.op == Op::LISTXATTR) && n > t.size) n = t.size;
    return Result(info.Env(), fuse_reply_buf(t.release(), reinterpret_cast<const char*>(a.Data()), n));
  }

  // replyStatfs(id, statfs)
  Napi::Value ReplyStatfs(const Napi::CallbackInfo& info) {
    TAKE(t);
    if (!info[1].IsObject()) throw Napi::TypeError::New(info.Env(), "replyStatfs: expected a StatFs");
    auto o = info[1].As<Napi::Object>();
    struct statvfs sv;
    memset(&sv, 0, sizeof sv);
    sv.f_bsize = static_cast<unsigned long>(Num(o, "bsize"));
    sv.f_frsize = static_cast<unsigned long>(Num(o, "frsize"));
    sv.f_blocks = static_cast<fsblkcnt_t>(Num(o, "blocks"));
    sv.f_bfree = static_cast<fsblkcnt_t>(Num(o, "bfree"));
    sv.f_bavail = static_cast<fsblkcnt_t>(Num(o, "bavail"));
    sv.f_files = static_cast<fsfilcnt_t>(Num(o, "files"));
    sv.f_ffree = static_cast<fsfilcnt_t>(Num(o, "ffree"));
    sv.f_favail = sv.f_ffree;
    sv.f_namemax = static_cast<unsigned long>(Num(o, "namemax"));
    return Result(info.Env(), fuse_reply_statfs(t.release(), &sv));
  }

  // replyXattr(id, size): the answer to a size-0 getxattr/listxattr.
  Napi::Value ReplyXattr(const Napi::CallbackInfo& info) {
    TAKE(t);
    return Result(info.Env(), fuse_reply_xattr(t.release(), static_cast<size_t>(NumArg(info, 1))));
  }

  // replyDirents(id, entries, entryTimeout, attrTimeout) -> how many entries fit (>= 0), or -errno
  // if the reply failed. For readdirplus, entries beyond that count were not given to the kernel
  // (nor were any, on failure): the caller drops the lookup references they carry.
  Napi::Value ReplyDirents(const Napi::CallbackInfo& info) {
    TAKE(t);
    Napi::Env env = info.Env();
    if (!info[1].IsArray()) throw Napi::TypeError::New(env, "replyDirents: expected an array");
    auto list = info[1].As<Napi::Array>();
    const bool plus = t.op == Op::READDIRPLUS;
    const double entryTimeout = plus ? NumArg(info, 2) : 0, attrTimeout = plus ? NumArg(info, 3) : 0;
    std::vector<char> buf(t.size);
    size_t pos = 0;
    uint32_t n = 0;
    for (; n < list.Length(); n++) {
      Napi::Value item = list.Get(n);
      if (!item.IsObject()) throw Napi::TypeError::New(env, "replyDirents: expected DirEntry objects");
      auto de = item.As<Napi::Object>();
      std::string name = Bytes(env, de.Get("name"));
      off_t next = static_cast<off_t>(Num(de, "nextOffset"));
      size_t used;
      if (plus) {
        fuse_entry_param e;
        Napi::Value ev = de.Get("entry");
        ToEntry(env, ev.IsObject() ? ev : env.Null(), entryTimeout, attrTimeout, e);
        if (!ev.IsObject()) {  // node id 0: a plain entry, the kernel takes no reference
          e.attr.st_ino = static_cast<ino_t>(Num(de, "ino"));
          e.attr.st_mode = static_cast<mode_t>(Num(de, "type")) << 12;
        }
        used = fuse_add_direntry_plus(t.req, buf.data() + pos, buf.size() - pos, name.c_str(), &e, next);
      } else {
        struct stat st;
        memset(&st, 0, sizeof st);
        st.st_ino = static_cast<ino_t>(Num(de, "ino"));
        st.st_mode = static_cast<mode_t>(Num(de, "type")) << 12;
        used = fuse_add_direntry(t.req, buf.data() + pos, buf.size() - pos, name.c_str(), &st, next);
      }
      if (used > buf.size() - pos) break;
      pos += used;
    }
    int res = fuse_reply_buf(t.release(), buf.data(), pos);
    return Result(env, res < 0 ? res : static_cast<int>(n));
  }

  // replyLseek(id, offset)
  Napi::Value ReplyLseek(const Napi::CallbackInfo& info) {
    TAKE(t);
    return Result(info.Env(), fuse_reply_lseek(t.release(), static_cast<off_t>(NumArg(info, 1))));
  }
#undef TAKE

  Napi::Value NotifyInvalEntry(const Napi::CallbackInfo& info) {
    auto job = std::make_unique<NotifyJob>();
    job->kind = NotifyJob::INVAL_ENTRY;
    job->ino = static_cast<uint64_t>(NumArg(info, 0));
    job->name = Bytes(info.Env(), info[1]);
    return Notify(info, std::move(job));
  }
  Napi::Value NotifyExpireEntry(const Napi::CallbackInfo& info) {
    auto job = std::make_unique<NotifyJob>();
    job->kind = NotifyJob::EXPIRE_ENTRY;
    job->ino = static_cast<uint64_t>(NumArg(info, 0));
    job->name = Bytes(info.Env(), info[1]);
    return Notify(info, std::move(job));
  }
  Napi::Value NotifyInvalInode(const Napi::CallbackInfo& info) {
    auto job = std::make_unique<NotifyJob>();
    job->kind = NotifyJob::INVAL_INODE;
    job->ino = static_cast<uint64_t>(NumArg(info, 0));
    job->off = static_cast<int64_t>(NumArg(info, 1));
    job->len = static_cast<int64_t>(NumArg(info, 2));
    return Notify(info, std::move(job));
  }
  Napi::Value NotifyDelete(const Napi::CallbackInfo& info) {
    auto job = std::make_unique<NotifyJob>();
    job->kind = NotifyJob::DELETE;
    job->ino = static_cast<uint64_t>(NumArg(info, 0));
    job->child = static_cast<uint64_t>(NumArg(info, 1));
    job->name = Bytes(info.Env(), info[2]);
    return Notify(info, std::move(job));
  }
  Napi::Value NotifyStore(const Napi::CallbackInfo& info) {
    auto job = std::make_unique<NotifyJob>();
    job->kind = NotifyJob::STORE;
    job->ino = static_cast<uint64_t>(NumArg(info, 0));
    job->off = static_cast<int64_t>(NumArg(info, 1));
    std::string d = Bytes(info.Env(), info[2]);  // copied: JS may reuse the buffer meanwhile
    job->data.assign(d.begin(), d.end());
    return Notify(info, std::move(job));
  }

  std::unique_ptr<Core> core_;
  Napi::FunctionReference onRequest_, onExit_;
  State state_ = State::IDLE;
  napi_deferred mountDeferred_ = nullptr;
  std::unordered_map<uint32_t, Pending> pending_;
  uint32_t nextId_ = 0;
};

Napi::Value FuseSession::Mount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (state_ != State::IDLE) throw Napi::Error::New(env, "fuse: mount() called twice");
  Core* core = core_.get();
  core->tsfn = Tsfn::New(env, "dirvisor-fuse", 0, 1, core, [](Napi::Env, void*, Core* c) {
    c->tsfnFinalized = true;
    if (c->owner) c->owner->Unref();  // may now be collected
  });
  core->tsfnCreated = true;
  Ref();  // stay alive (and keep Node alive, via the TSFN) while mounted
  state_ = State::MOUNTING;
  napi_deferred d;
  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &d, &promise), Napi::Value());
  mountDeferred_ = d;
  try {
    core->loop = std::thread(&Core::Run, core);
  } catch (const std::system_error& e) {
    state_ = State::CLOSED;
    mountDeferred_ = nullptr;
    core->tsfn.Release();
    napi_reject_deferred(env, d, ErrnoError(env, e.code().value(), "fuse: cannot start thread"));
  }
  return Napi::Value(env, promise);
}

void FuseSession::OnMounted(Napi::Env env, int err) {
  napi_deferred d = mountDeferred_;
  mountDeferred_ = nullptr;
  if (err) {
    napi_reject_deferred(env, d, ErrnoError(env, err, "fuse: cannot mount " + core_->mountpoint));
    return;
  }
  state_ = State::MOUNTED;
  napi_resolve_deferred(env, d, env.Undefined());
}

void FuseSession::OnRequest(Napi::Env env, Request& r) {
  uint32_t id = 0;
  if (r.req) {
    do id = ++nextId_;
    while (id == 0 || pending_.count(id));
    pending_.emplace(id, Pending{r.req, r.op, r.size});
    r.req = nullptr;  // owned by pending_ now
  }
  auto num = [&](double v) { return Napi::Number::New(env, v); };
  auto bytes = [&](const std::string& s) { return Napi::Buffer<char>::Copy(env, s.data(), s.size()); };
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", num(id));
  o.Set("op", kOpNames[static_cast<int>(r.op)]);
  if (r.op == Op::FORGET) {
    Napi::Array items = Napi::Array::New(env, r.forgets.size());
    for (size_t i = 0; i < r.forgets.size(); i++) {
      Napi::Object it = Napi::Object::New(env);
      it.Set("nodeId", num(static_cast<double>(r.forgets[i].ino)));
      it.Set("nlookup", num(static_cast<double>(r.forgets[i].nlookup)));
      items.Set(static_cast<uint32_t>(i), it);
    }
    o.Set("items", items);
  } else {
    o.Set("uid", num(r.uid));
    o.Set("gid", num(r.gid));
    o.Set("pid", num(r.pid));
    if (r.op == Op::MKNOD || r.op == Op::MKDIR || r.op == Op::CREATE) o.Set("umask", num(r.umask));
    if (r.hasGroups) {
      Napi::Array g = Napi::Array::New(env, r.groups.size());
      for (size_t i = 0; i < r.groups.size(); i++) g.Set(static_cast<uint32_t>(i), num(r.groups[i]));
      o.Set("groups", g);
    }
  }
  const double ino = static_cast<double>(r.ino), ino2 = static_cast<double>(r.ino2);
  const double fh = static_cast<double>(r.fh);
  auto setFh = [&] {
    if (r.hasFh) o.Set("fh", num(fh));
  };
  switch (r.op) {
    case Op::LOOKUP: case Op::UNLINK: case Op::RMDIR:
      o.Set("parent", num(ino));
      o.Set("name", bytes(r.name));
      break;
    case Op::FORGET:
      break;
    case Op::GETATTR:
      o.Set("node", num(ino));
      setFh();
      break;
    case Op::SETATTR: {
      o.Set("node", num(ino));
      setFh();
      o.Set("valid", num(r.mask));
      Napi::Object set = Napi::Object::New(env);
      auto time = [&](const timespec& ts) {
        Napi::Object t = Napi::Object::New(env);
        t.Set("sec", num(static_cast<double>(ts.tv_sec)));
        t.Set("nsec", num(static_cast<double>(ts.tv_nsec)));
        return t;
      };
      if (r.mask & FUSE_SET_ATTR_MODE) set.Set("mode", num(r.st.st_mode));
      if (r.mask & FUSE_SET_ATTR_UID) set.Set("uid", num(r.st.st_uid));
      if (r.mask & FUSE_SET_ATTR_GID) set.Set("gid", num(r.st.st_gid));
      if (r.mask & FUSE_SET_ATTR_SIZE) set.Set("size", num(static_cast<double>(r.st.st_size)));
      if (r.mask & FUSE_SET_ATTR_ATIME_NOW) set.Set("atime", "now");
      else if (r.mask & FUSE_SET_ATTR_ATIME) set.Set("atime", time(r.st.st_atim));
      if (r.mask & FUSE_SET_ATTR_MTIME_NOW) set.Set("mtime", "now");
      else if (r.mask & FUSE_SET_ATTR_MTIME) set.Set("mtime", time(r.st.st_mtim));
      if (r.mask & FUSE_SET_ATTR_CTIME) o.Set("ctime", time(r.st.st_ctim));
      o.Set("set", set);
      break;
    }
    case Op::READLINK: case Op::STATFS:
      o.Set("node", num(ino));
      break;
    case Op::MKNOD:
      o.Set("parent", num(ino));
      o.Set("name", bytes(r.name));
      o.Set("mode", num(r.mode));
      o.Set("rdev", num(static_cast<double>(r.rdev)));
      break;
    case Op::MKDIR:
      o.Set("parent", num(ino));
      o.Set("name", bytes(r.name));
      o.Set("mode", num(r.mode));
      break;
    case Op::SYMLINK:
      o.Set("parent", num(ino));
      o.Set("name", bytes(r.name));
      o.Set("target", bytes(r.name2));
      break;
    case Op::RENAME:
      o.Set("parent", num(ino));
      o.Set("name", bytes(r.name));
      o.Set("newParent", num(ino2));
      o.Set("newName", bytes(r.name2));
      o.Set("flags", num(r.flags));
      break;
    case Op::LINK:
      o.Set("node", num(ino));
      o.Set("newParent", num(ino2));
      o.Set("newName", bytes(r.name));
      break;
    case Op::OPEN: case Op::OPENDIR:
      o.Set("node", num(ino));
      o.Set("flags", num(r.flags));
      break;
    case Op::READ: case Op::READDIR: case Op::READDIRPLUS:
      o.Set("node", num(ino));
      setFh();
      o.Set("offset", num(static_cast<double>(r.off)));
      o.Set("size", num(static_cast<double>(r.size)));
      break;
    case Op::WRITE: {
      o.Set("node", num(ino));
      setFh();
      o.Set("offset", num(static_cast<double>(r.off)));
      o.Set("writepage", Napi::Boolean::New(env, r.writepage));
      // Hand the copied payload to JS without another copy.
      Napi::Buffer<char> data = r.data
          ? Napi::Buffer<char>::New(env, r.data, r.dataLen, [](Napi::Env, char* p) { free(p); })
          : Napi::Buffer<char>::New(env, 0);
      r.data = nullptr;
      o.Set("data", data);
      break;
    }
    case Op::FLUSH: case Op::RELEASEDIR:
      o.Set("node", num(ino));
      setFh();
      break;
    case Op::RELEASE:
      o.Set("node", num(ino));
      setFh();
      o.Set("flags", num(r.flags));
      break;
    case Op::FSYNC: case Op::FSYNCDIR:
      o.Set("node", num(ino));
      setFh();
      o.Set("datasync", Napi::Boolean::New(env, r.datasync));
      break;
    case Op::SETXATTR:
      o.Set("node", num(ino));
      o.Set("name", bytes(r.name));
      o.Set("value", Napi::Buffer<char>::Copy(env, r.data ? r.data : "", r.dataLen));
      o.Set("flags", num(r.flags));
      break;
    case Op::GETXATTR:
      o.Set("node", num(ino));
      o.Set("name", bytes(r.name));
      o.Set("size", num(static_cast<double>(r.size)));
      break;
    case Op::LISTXATTR:
      o.Set("node", num(ino));
      o.Set("size", num(static_cast<double>(r.size)));
      break;
    case Op::REMOVEXATTR:
      o.Set("node", num(ino));
      o.Set("name", bytes(r.name));
      break;
    case Op::ACCESS:
      o.Set("node", num(ino));
      o.Set("mask", num(r.mask));
      break;
    case Op::CREATE:
      o.Set("parent", num(ino));
      o.Set("name", bytes(r.name));
      o.Set("mode", num(r.mode));
      o.Set("flags", num(r.flags));
      break;
    case Op::FALLOCATE:
      o.Set("node", num(ino));
      setFh();
      o.Set("mode", num(r.mask));
      o.Set("offset", num(static_cast<double>(r.off)));
      o.Set("length", num(static_cast<double>(r.size)));
      break;
    case Op::COPY_FILE_RANGE:
      o.Set("nodeIn", num(ino));
      o.Set("fhIn", num(fh));
      o.Set("offsetIn", num(static_cast<double>(r.off)));
      o.Set("nodeOut", num(ino2));
      o.Set("fhOut", num(static_cast<double>(r.fh2)));
      o.Set("offsetOut", num(static_cast<double>(r.off2)));
      o.Set("length", num(static_cast<double>(r.size)));
      o.Set("flags", num(r.flags));
      break;
    case Op::LSEEK:
      o.Set("node", num(ino));
      setFh();
      o.Set("offset", num(static_cast<double>(r.off)));
      o.Set("whence", num(r.mask));
      break;
    case Op::COUNT:
      break;
  }
  try {
    onRequest_.Call({o});
  } catch (...) {
    // The handler threw before answering: the kernel must still get an answer.
    auto it = id ? pending_.find(id) : pending_.end();
    if (it != pending_.end()) {
      fuse_reply_err(it->second.req, EIO);
      pending_.erase(it);
    }
    throw;
  }
}

void FuseSession::OnExit(Napi::Env env, bool wasMounted) {
  const bool served = state_ == State::MOUNTED;  // else mount() was rejected: nobody to tell
  if (core_->loop.joinable()) core_->loop.join();  // it has posted its last event
  // The connection is gone: fail what JS has not answered (late replies then return -ENOTCONN).
  for (auto& p : pending_) fuse_reply_err(p.second.req, EIO);
  pending_.clear();
  if (core_->se) {
    // Closes /dev/fuse first (aborting the connection if still up), so it cannot block on us.
    if (wasMounted) fuse_session_unmount(core_->se);
    fuse_session_destroy(core_->se);
    core_->se = nullptr;
  }
  state_ = State::CLOSED;
  if (!core_->tsfnClosed) core_->tsfn.Release();  // the loop thread's count
  if (wasMounted && served) onExit_.Call({});
}

Napi::Value FuseSession::Unmount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool lazy = info[0].ToBoolean().Value();
  napi_deferred d;
  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &d, &promise), Napi::Value());
  if (state_ != State::MOUNTED || core_->tsfn.Acquire() != napi_ok) {
    napi_resolve_deferred(env, d, Napi::Number::New(env, state_ == State::CLOSED ? ENOTCONN : EINVAL));
    return Napi::Value(env, promise);
  }
  try {
    std::thread(UnmountThread, core_.get(), core_->mountpoint, lazy, d).detach();
  } catch (const std::system_error& e) {
    core_->tsfn.Release();
    napi_resolve_deferred(env, d, Napi::Number::New(env, e.code().value()));
  }
  return Napi::Value(env, promise);
}

Napi::Value FuseSession::Notify(const Napi::CallbackInfo& info, std::unique_ptr<NotifyJob> job) {
  Napi::Env env = info.Env();
  napi_deferred d;
  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &d, &promise), Napi::Value());
  job->deferred = d;
  if (state_ != State::MOUNTED || !core_->PushJob(job))
    napi_resolve_deferred(env, d, Napi::Number::New(env, ENOTCONN));
  return Napi::Value(env, promise);
}

void Request::Deliver(Napi::Env env, FuseSession& s) { s.OnRequest(env, *this); }
void MountedEvent::Deliver(Napi::Env env, FuseSession& s) { s.OnMounted(env, err); }
void ExitEvent::Deliver(Napi::Env env, FuseSession& s) { s.OnExit(env, wasMounted); }
void ResultEvent::Deliver(Napi::Env env, FuseSession&) {
  napi_resolve_deferred(env, deferred, Napi::Number::New(env, err));
}

void Core::Post(Event* ev) {
  // After napi_closing Node has already dropped this thread's count: stop calling.
  if (tsfnClosed.load() || tsfn.NonBlockingCall(ev) != napi_ok) {
    tsfnClosed = true;
    ev->Abandon();
    delete ev;
  }
}

void CallJs(Napi::Env env, Napi::Function, Core* core, Event* ev) {
  std::unique_ptr<Event> owned(ev);
  if (env == nullptr || core == nullptr || core->owner == nullptr) {
    ev->Abandon();
    return;
  }
  try {
    ev->Deliver(env, *core->owner);
  } catch (const Napi::Error& e) {
    e.ThrowAsJavaScriptException();  // surfaces as an uncaught exception
  } catch (const std::exception& e) {
    Napi::Error::New(env, e.what()).ThrowAsJavaScriptException();
  }
}

// replaySync(mountpoint, { op, dir, name, dir2?, name2?, target?, mode?, offset?, atime?, mtime? })
// -> 0 or a positive errno. One syscall on entry `name` of directory `dir` (relative to the mount's
// root, "" for the root), made on the calling thread. op is one of mknod, mkdir, symlink (target),
// unlink, rmdir, rename (to name2 in dir2), write (offset < 0: truncate to 0), utimens (atime,
// mtime as { sec, nsec }). Only for a process that does not serve the mount (the replay process).
Napi::Value ReplaySync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject())
    throw Napi::TypeError::New(env, "replaySync(mountpoint, op)");
  std::string mountpoint = info[0].As<Napi::String>().Utf8Value();
  auto o = info[1].As<Napi::Object>();
  static const std::pair<const char*, NotifyJob::ReplayOp> kOps[] = {
      {"mknod", NotifyJob::R_MKNOD}, {"mkdir", NotifyJob::R_MKDIR},   {"symlink", NotifyJob::R_SYMLINK},
      {"unlink", NotifyJob::R_UNLINK}, {"rmdir", NotifyJob::R_RMDIR}, {"rename", NotifyJob::R_RENAME},
      {"write", NotifyJob::R_WRITE}, {"utimens", NotifyJob::R_UTIMENS}};
  std::string op = o.Get("op").ToString().Utf8Value();
  NotifyJob job;
  job.kind = NotifyJob::REPLAY;
  bool known = false;
  for (auto& k : kOps)
    if (op == k.first) job.replay = k.second, known = true;
  if (!known) throw Napi::TypeError::New(env, "replay: unknown op " + op);
  auto str = [&](const char* key) {
    Napi::Value v = o.Get(key);
    return v.IsUndefined() || v.IsNull() ? std::string() : Bytes(env, v);
  };
  job.rdir = str("dir");
  job.rname = str("name");
  job.rdir2 = str("dir2");
  job.rname2 = str("name2");
  job.target = str("target");
  if (job.target.find('\0') != std::string::npos) throw Napi::TypeError::New(env, "replay: NUL in target");
  job.mode = static_cast<uint32_t>(Num(o, "mode"));
  job.off = static_cast<int64_t>(Num(o, "offset"));
  ToTimespec(o, "atime", job.times[0]);
  ToTimespec(o, "mtime", job.times[1]);
  return Napi::Number::New(env, -RunReplayAt(mountpoint, job));
}

}  // namespace dvfuse

void InitFuse(Napi::Env env, Napi::Object exports) {
  exports.Set("FuseSession", dvfuse::FuseSession::Init(env));
  exports.Set("fuseVersion", Napi::Number::New(env, fuse_version()));
  exports.Set("replaySync", Napi::Function::New<dvfuse::ReplaySync>(env, "replaySync"));
}
