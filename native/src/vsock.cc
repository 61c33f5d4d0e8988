// AF_VSOCK sockets for JS: listen/accept, connect, local CID, addresses. All sockets are
// non-blocking and driven by uv_poll on the Node event loop, so nothing here ever blocks it.
// Connected fds are handed to JS as plain numbers; JS wraps them in a UvStream (uv_stream.cc).
//
// JS API:
//   vsockListen(cid, port, backlog, onConnection(err, fd?, peerCid?, peerPort?)) -> VsockListener
//       VsockListener: close(cb?), ref(), unref(), port, cid      (VMADDR_*_ANY = 0xFFFFFFFF)
//   vsockConnect(cid, port, { allowHostCid?, timeoutMs? }, cb(err, fd?, localCid?, localPort?))
//       throws for bad arguments and refused destinations (CIDs 0..2, see kHostCidMax; any);
//       every kernel outcome, success or error, arrives asynchronously through cb.
//   localCid() -> number              ioctl(IOCTL_VM_SOCKETS_GET_LOCAL_CID) on /dev/vsock
//   peerAddress(fd) / localAddress(fd) -> { cid, port }
//   socketpair() -> [fd, fd]          AF_UNIX SOCK_STREAM, for tests of the stream path
//   setStreamBuffers(fd, bytes) -> { send, recv }   SO_SNDBUF/SO_RCVBUF of a unix/tcp socket (0: only read)
//                                     (forced past net.core.*mem_max when root); the sizes in effect
#include "addon.h"

#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
// clang-format off: linux/vm_sockets.h needs sys/socket.h first
#include <linux/vm_sockets.h>
// clang-format on

#include <memory>
#include <string>
#include <vector>

namespace {

// CIDs 0 (hypervisor), 1 (local loopback, or the host on some setups) and 2 (host) leave this
// machine. A connect to them must be an explicit decision (allowHostCid), never an accident.
constexpr uint32_t kHostCidMax = 2;
// After an accept error (EMFILE...) the listening socket stays readable, and after a poll error
// libuv stops polling: in both cases pause, report, and try again instead of spinning or dying.
constexpr uint64_t kAcceptBackoffMs = 100;
// virtio-vsock lets a peer send only as much as the receiver's buffer (256 KiB by default) before
// it must wait for a credit update: a 1 MiB write frame took four such waits. Accepted sockets
// inherit the listener's size.
constexpr uint64_t kVsockBufferBytes = 4u << 20;

// Best effort: a kernel that refuses keeps its default, which is slower but correct.
void WidenVsockBuffers(int fd) {
  uint64_t size = kVsockBufferBytes;
  setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_MAX_SIZE, &size, sizeof size);
  setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &size, sizeof size);
}

std::string CidName(uint32_t cid) {
  return cid == VMADDR_CID_ANY ? std::string("any") : std::to_string(cid);
}

std::string PortName(uint32_t port) {
  return port == VMADDR_PORT_ANY ? std::string("any") : std::to_string(port);
}

// A JS Error shaped like Node's system errors (.code, .errno negative, .syscall), with a message
// that names what was attempted: "vsock connect to CID 3 port 1024 failed: ENODEV (no such device)".
// Built with the C API so it is safe in libuv callbacks: nullptr if napi refuses (shutdown).
napi_value SystemError(napi_env env, int err, const char* syscall, const std::string& what) {
  int uvErr = -err;  // libuv codes are negated errno values on Linux
  std::string message = what + " failed: " + uv_err_name(uvErr) + " (" + uv_strerror(uvErr) + ")";
  if (err == ENODEV && std::string(syscall) == "connect")
    message += "; no vsock transport reaches that CID (no such VM, or this machine's own CID "
               "without vsock loopback)";
  if (err == ENOENT && std::string(syscall) == "open")
    message += "; is the vsock driver loaded (modprobe vsock / vmw_vsock_virtio_transport)?";
  napi_value msg, e, code, errnum, sys;
  if (napi_create_string_utf8(env, message.c_str(), message.size(), &msg) != napi_ok ||
      napi_create_error(env, nullptr, msg, &e) != napi_ok ||
      napi_create_string_utf8(env, uv_err_name(uvErr), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_int32(env, uvErr, &errnum) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys) != napi_ok ||
      napi_set_named_property(env, e, "code", code) != napi_ok ||
      napi_set_named_property(env, e, "errno", errnum) != napi_ok ||
      napi_set_named_property(env, e, "syscall", sys) != napi_ok)
    return nullptr;
  return e;
}

// For functions called from JS, where throwing is the normal way out.
[[noreturn]] void ThrowSystemError(Napi::Env env, int err, const char* syscall,
                                   const std::string& what) {
  napi_value e = SystemError(env, err, syscall, what);
  if (e == nullptr) throw Napi::Error::New(env, what + " failed");
  throw Napi::Error(env, e);
}

Napi::Error CodeError(Napi::Env env, const char* code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));  // only thrown synchronously: node-addon-api is fine
  return e;
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  // Accept -1 as the conventional spelling of VMADDR_*_ANY.
  if (info.Length() <= i || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d == -1) return 0xFFFFFFFFu;
  if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint32_t>(d)))
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer 0..2^32-1");
  return static_cast<uint32_t>(d);
}

sockaddr_vm VsockAddr(uint32_t cid, uint32_t port) {
  sockaddr_vm sa{};
  sa.svm_family = AF_VSOCK;
  sa.svm_cid = cid;
  sa.svm_port = port;
  return sa;
}

Napi::Object AddressObject(Napi::Env env, const sockaddr_vm& sa) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("cid", Napi::Number::New(env, sa.svm_cid));
  o.Set("port", Napi::Number::New(env, sa.svm_port));
  return o;
}

uv_loop_t* Loop(Napi::Env env) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no uv loop");
  return loop;
}

// Calls fn from a libuv callback through napi_make_callback (async_hooks context, nextTick queue
// drained after). A JS exception is re-raised as an uncaught exception (process
// 'uncaughtException', or exit). The C API on purpose: while the environment shuts down
// (Worker.terminate(), process exit) napi calls that may run JS fail, node-addon-api would turn
// that into an abort, and here every step just becomes a no-op. Handles still open at teardown
// are closed by async cleanup hooks without calling JS; Node waits for them.
void CallFromLoop(napi_env env, napi_ref fn, napi_value recv,
                  const std::initializer_list<napi_value>& args, napi_async_context ctx) {
  napi_value func = nullptr, result;
  if (fn == nullptr || napi_get_reference_value(env, fn, &func) != napi_ok || func == nullptr)
    return;
  if (napi_make_callback(env, ctx, recv, func, args.size(), args.begin(), &result) ==
      napi_pending_exception) {
    napi_value exception;
    if (napi_get_and_clear_last_exception(env, &exception) == napi_ok)
      napi_fatal_exception(env, exception);
  }
}

// ---------------------------------------------------------------------------------------------
// Listener

class VsockListener : public Napi::ObjectWrap<VsockListener> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "VsockListener",
                       {
                           InstanceMethod<&VsockListener::Close>("close"),
                           InstanceMethod<&VsockListener::RefHandles>("ref"),
                           InstanceMethod<&VsockListener::UnrefHandles>("unref"),
                           InstanceAccessor<&VsockListener::Port>("port"),
                           InstanceAccessor<&VsockListener::Cid>("cid"),
                       });
  }

  // new VsockListener(cid, port, backlog, onConnection)
  VsockListener(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VsockListener>(info) {
    Napi::Env env = info.Env();
    cid_ = ArgU32(info, 0, "cid");
    port_ = ArgU32(info, 1, "port");
    int backlog = 128;
    if (info.Length() > 2 && info[2].IsNumber()) backlog = info[2].As<Napi::Number>().Int32Value();
    if (info.Length() < 4 || !info[3].IsFunction())
      throw Napi::TypeError::New(env, "onConnection must be a function");
    std::string what = "vsock listen on CID " + CidName(cid_) + " port " + PortName(port_);

    fd_ = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) ThrowSystemError(env, errno, "socket", what);
    WidenVsockBuffers(fd_);
    sockaddr_vm sa = VsockAddr(cid_, port_);
    const char* failed = nullptr;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
      failed = "bind";
    else if (listen(fd_, backlog) != 0)
      failed = "listen";
    else {
      socklen_t len = sizeof sa;
      if (getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) failed = "getsockname";
      port_ = sa.svm_port;  // the real one when VMADDR_PORT_ANY was asked
    }
    if (failed != nullptr) {
      int err = errno;
      close(fd_);
      fd_ = -1;
      ThrowSystemError(env, err, failed, what);
    }

    uv_loop_t* loop = Loop(env);
    poll_ = new uv_poll_t;
    backoff_ = new uv_timer_t;
    uv_poll_init(loop, poll_, fd_);
    uv_timer_init(loop, backoff_);
    poll_->data = this;
    backoff_->data = this;
    int err = uv_poll_start(poll_, UV_READABLE, OnReadable);
    if (err != 0) {
      // This object dies with the exception: detach the handles, they free themselves.
      poll_->data = nullptr;
      backoff_->data = nullptr;
      CloseHandles();
      close(fd_);
      ThrowSystemError(env, -err, "uv_poll_start", what);
    }
    onConnection_ = Napi::Persistent(info[3].As<Napi::Function>());
    async_ = std::make_unique<Napi::AsyncContext>(env, "dirvisor:VsockListener", Value());
    Ref();  // alive while libuv may call back
    napi_add_async_cleanup_hook(env, OnEnvCleanup, this, &cleanupHook_);
  }

  ~VsockListener() override {
    // Not reached with open handles (strong ref until closed, cleanup hook at teardown).
    // Defensive anyway: detach, let libuv finish alone.
    if (poll_ != nullptr) {
      poll_->data = nullptr;
      backoff_->data = nullptr;
      if (!closing_) CloseHandles();
      onConnection_.SuppressDestruct();
      closeCb_.SuppressDestruct();
      (void)async_.release();
    }
  }

 private:
  void CloseHandles() {
    closing_ = true;
    pendingCloses_ = 2;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), OnHandleClosed);
    uv_close(reinterpret_cast<uv_handle_t*>(backoff_), OnHandleClosed);
  }

  static void OnHandleClosed(uv_handle_t* h) {
    auto* self = static_cast<VsockListener*>(h->data);
    if (h->type == UV_POLL)
      delete reinterpret_cast<uv_poll_t*>(h);
    else
      delete reinterpret_cast<uv_timer_t*>(h);
    if (self == nullptr || --self->pendingCloses_ > 0) return;
    // The fd is closed only now: libuv must no longer be polling it.
    close(self->fd_);
    self->fd_ = -1;
    self->poll_ = nullptr;
    self->backoff_ = nullptr;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    if (!self->envGone_) CallFromLoop(env, self->closeCb_, self->Value(), {}, *self->async_);
    self->closeCb_.Reset();
    self->onConnection_.Reset();
    self->async_.reset();
    napi_remove_async_cleanup_hook(self->cleanupHook_);
    self->cleanupHook_ = nullptr;
    self->Unref();
  }

  static void OnEnvCleanup(napi_async_cleanup_hook_handle, void* arg) {
    auto* self = static_cast<VsockListener*>(arg);
    self->envGone_ = true;
    if (!self->closing_) self->CloseHandles();
  }

  static void OnReadable(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<VsockListener*>(h->data);
    if (self == nullptr || self->closing_) return;
    if (status < 0) {
      self->PauseAccepting();
      self->ReportError(-status, "poll");
      return;
    }
    // Drain the accept queue, but bounded so one busy listener cannot starve the loop.
    for (int i = 0; i < 64 && !self->closing_; i++) {
      sockaddr_vm peer{};
      socklen_t len = sizeof peer;
      int fd = accept4(self->fd_, reinterpret_cast<sockaddr*>(&peer), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        self->ReportConnection(fd, peer);
        continue;
      }
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EINTR || err == ECONNABORTED) continue;
      self->PauseAccepting();
      self->ReportError(err, "accept");
      return;
    }
  }

  void PauseAccepting() {
    uv_poll_stop(poll_);
    uv_timer_start(backoff_, OnBackoffDone, kAcceptBackoffMs, 0);
  }

  static void OnBackoffDone(uv_timer_t* t) {
    auto* self = static_cast<VsockListener*>(t->data);
    if (self == nullptr || self->closing_) return;
    uv_poll_start(self->poll_, UV_READABLE, OnReadable);
  }

  // The accepted fd is JS's from here on (if JS never runs again, it dies with the process).
  void ReportConnection(int fd, const sockaddr_vm& peer) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    CallFromLoop(env, onConnection_, Value(),
                 {env.Null(), Napi::Number::New(env, fd), Napi::Number::New(env, peer.svm_cid),
                  Napi::Number::New(env, peer.svm_port)},
                 *async_);
  }

  void ReportError(int err, const char* syscall) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (napi_value e = SystemError(env, err, syscall, What()))
      CallFromLoop(env, onConnection_, Value(), {e}, *async_);
  }

  std::string What() const {
    return "vsock accept on CID " + CidName(cid_) + " port " + PortName(port_);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (closing_ || poll_ == nullptr) return info.Env().Undefined();
    if (info.Length() > 0 && info[0].IsFunction())
      closeCb_ = Napi::Persistent(info[0].As<Napi::Function>());
    CloseHandles();
    return info.Env().Undefined();
  }

  Napi::Value RefHandles(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr && !closing_) {
      uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
      uv_ref(reinterpret_cast<uv_handle_t*>(backoff_));
    }
    return info.Env().Undefined();
  }

  Napi::Value UnrefHandles(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr && !closing_) {
      uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
      uv_unref(reinterpret_cast<uv_handle_t*>(backoff_));
    }
    return info.Env().Undefined();
  }

  Napi::Value Port(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), port_); }
  Napi::Value Cid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), cid_); }

  int fd_ = -1;
  uint32_t cid_ = 0;
  uint32_t port_ = 0;
  uv_poll_t* poll_ = nullptr;  // heap: may outlive this object (see destructor)
  uv_timer_t* backoff_ = nullptr;
  bool closing_ = false;
  bool envGone_ = false;
  int pendingCloses_ = 0;
  napi_async_cleanup_hook_handle cleanupHook_ = nullptr;
  Napi::FunctionReference onConnection_;
  Napi::FunctionReference closeCb_;
  std::unique_ptr<Napi::AsyncContext> async_;
};

// ---------------------------------------------------------------------------------------------
// Connect

// One in-flight connect. It owns either a poll handle (connect in progress) or a zero timer
// (the kernel answered at once: the answer is still delivered asynchronously, like a callback).
struct ConnectReq {
  union {
    uv_poll_t poll;
    uv_timer_t timer;
  } h;
  uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&h); }
  int fd = -1;  // ours until Finish() hands it to JS or closes it
  int err = 0;  // positive errno once known
  bool closing = false;
  napi_async_cleanup_hook_handle cleanupHook = nullptr;
  uint32_t cid = 0, port = 0;
  Napi::Env env;
  Napi::FunctionReference cb;
  Napi::ObjectReference resource;  // receiver for the callback and async_hooks resource
  std::unique_ptr<Napi::AsyncContext> async;

  explicit ConnectReq(Napi::Env e) : env(e) {}

  std::string What() const {
    return "vsock connect to CID " + CidName(cid) + " port " + PortName(port);
  }

  // Stops the handle and closes it; OnClosed frees this.
  void CloseHandle() {
    closing = true;
    if (handle()->type == UV_POLL) uv_poll_stop(&h.poll);
    uv_close(handle(), OnClosed);
  }

  static void OnClosed(uv_handle_t* hh) {
    auto* req = static_cast<ConnectReq*>(hh->data);
    if (req->fd >= 0) close(req->fd);  // only at teardown: never handed to JS
    napi_remove_async_cleanup_hook(req->cleanupHook);
    Napi::HandleScope scope(req->env);
    delete req;
  }

  static void OnEnvCleanup(napi_async_cleanup_hook_handle, void* arg) {
    auto* req = static_cast<ConnectReq*>(arg);
    if (!req->closing) req->CloseHandle();
  }

  // Closes the handle and calls back into JS with the outcome.
  void Finish() {
    CloseHandle();
    sockaddr_vm local{};
    if (err == 0) {
      socklen_t len = sizeof local;
      sockaddr_vm peer{};
      socklen_t plen = sizeof peer;
      // SO_ERROR 0 yet not connected would be a kernel oddity; treat it as a failed connect.
      if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0 ||
          getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0)
        err = errno;
    }
    Napi::HandleScope scope(env);
    if (err != 0) {
      close(fd);
      fd = -1;
      if (napi_value e = SystemError(env, err, "connect", What()))
        CallFromLoop(env, cb, resource.Value(), {e}, *async);
      return;
    }
    int connected = fd;
    fd = -1;  // JS's from here on (if JS never runs again, it dies with the process)
    CallFromLoop(env, cb, resource.Value(),
                 {env.Null(), Napi::Number::New(env, connected),
                  Napi::Number::New(env, local.svm_cid), Napi::Number::New(env, local.svm_port)},
                 *async);
  }

  static void OnWritable(uv_poll_t* p, int status, int events) {
    auto* req = static_cast<ConnectReq*>(p->data);
    int soErr = 0;
    socklen_t len = sizeof soErr;
    if (getsockopt(req->fd, SOL_SOCKET, SO_ERROR, &soErr, &len) != 0) soErr = errno;
    // libuv reports POLLERR as UV_EBADF; SO_ERROR holds the real reason.
    req->err = soErr != 0 ? soErr : (status < 0 ? -status : 0);
    req->Finish();
  }

  static void OnImmediate(uv_timer_t* t) { static_cast<ConnectReq*>(t->data)->Finish(); }
};

Napi::Value VsockConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t cid = ArgU32(info, 0, "cid");
  uint32_t port = ArgU32(info, 1, "port");
  Napi::Object opts = info.Length() > 2 && info[2].IsObject() ? info[2].As<Napi::Object>()
                                                              : Napi::Object::New(env);
  if (info.Length() < 4 || !info[3].IsFunction())
    throw Napi::TypeError::New(env, "vsockConnect(cid, port, opts, cb: function)");
  std::string what = "vsock connect to CID " + CidName(cid) + " port " + PortName(port);

  // Safety net, checked before any socket exists.
  if (cid == VMADDR_CID_ANY)
    throw CodeError(env, "ERR_VSOCK_BAD_CID", what + " refused: CID any is not a destination");
  Napi::Value allow = opts.Get("allowHostCid");
  bool allowHost = allow.IsBoolean() && allow.As<Napi::Boolean>().Value();  // exactly `true`
  if (cid <= kHostCidMax && !allowHost)
    throw CodeError(env, "ERR_VSOCK_HOST_CID",
                    what + " refused: CIDs 0-2 reach the hypervisor host; pass allowHostCid: true "
                           "to connect there deliberately");
  if (port == VMADDR_PORT_ANY)
    throw CodeError(env, "ERR_VSOCK_BAD_PORT", what + " refused: port any is not a destination");

  uv_loop_t* loop = Loop(env);
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowSystemError(env, errno, "socket", what);
  WidenVsockBuffers(fd);

  Napi::Value timeout = opts.Get("timeoutMs");
  if (timeout.IsNumber()) {
    // The kernel's own connect timeout (default 2 s) bounds how long the poll can wait.
    double ms = timeout.As<Napi::Number>().DoubleValue();
    if (ms > 0) {
      timeval tv{};
      tv.tv_sec = static_cast<time_t>(ms / 1000);
      tv.tv_usec = static_cast<suseconds_t>((ms - tv.tv_sec * 1000.0) * 1000);
      if (setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv) != 0) {
        int err = errno;
        close(fd);
        ThrowSystemError(env, err, "setsockopt", what);
      }
    }
  }

  auto req = std::make_unique<ConnectReq>(env);
  req->fd = fd;
  req->cid = cid;
  req->port = port;
  req->cb = Napi::Persistent(info[3].As<Napi::Function>());
  Napi::Object resource = Napi::Object::New(env);
  req->resource = Napi::Persistent(resource);
  req->async = std::make_unique<Napi::AsyncContext>(env, "dirvisor:VsockConnect", resource);

  sockaddr_vm sa = VsockAddr(cid, port);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int err = rc == 0 ? 0 : errno;
  if (err == EINPROGRESS || err == 0) {
    // Writable means the handshake is over, one way or the other: SO_ERROR tells which.
    uv_poll_init(loop, &req->h.poll, fd);
    req->h.poll.data = req.get();
    int perr = uv_poll_start(&req->h.poll, UV_WRITABLE, ConnectReq::OnWritable);
    if (perr != 0) {
      req->fd = -1;
      uv_close(req->handle(), [](uv_handle_t* hh) { delete static_cast<ConnectReq*>(hh->data); });
      req.release();
      close(fd);
      ThrowSystemError(env, -perr, "uv_poll_start", what);
    }
  } else {
    req->err = err;
    uv_timer_init(loop, &req->h.timer);
    req->h.timer.data = req.get();
    uv_timer_start(&req->h.timer, ConnectReq::OnImmediate, 0, 0);
  }
  napi_add_async_cleanup_hook(env, ConnectReq::OnEnvCleanup, req.get(), &req->cleanupHook);
  req.release();  // owned by the libuv handle until its close callback
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// Small synchronous helpers

Napi::Value LocalCid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowSystemError(env, errno, "open", "reading the local vsock CID from /dev/vsock");
  unsigned int cid = 0;
  int rc = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
  int err = errno;
  close(fd);
  if (rc != 0) ThrowSystemError(env, err, "ioctl", "IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock");
  return Napi::Number::New(env, cid);
}

Napi::Value SockAddress(const Napi::CallbackInfo& info, bool peer) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "fd must be a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  const char* syscall = peer ? "getpeername" : "getsockname";
  if ((peer ? getpeername(fd, sa, &len) : getsockname(fd, sa, &len)) != 0)
    ThrowSystemError(env, errno, syscall, std::string(syscall) + " on fd " + std::to_string(fd));
  if (ss.ss_family != AF_VSOCK)
    ThrowSystemError(env, EAFNOSUPPORT, syscall,
                     std::string(syscall) + " on fd " + std::to_string(fd) + " (not AF_VSOCK)");
  return AddressObject(env, *reinterpret_cast<sockaddr_vm*>(&ss));
}

Napi::Value PeerAddress(const Napi::CallbackInfo& info) { return SockAddress(info, true); }
Napi::Value LocalAddress(const Napi::CallbackInfo& info) { return SockAddress(info, false); }

Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    ThrowSystemError(env, errno, "socketpair", "socketpair(AF_UNIX, SOCK_STREAM)");
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, fds[0]));
  out.Set(1u, Napi::Number::New(env, fds[1]));
  return out;
}

// A unix or tcp socket's kernel buffers: with the default ~208 KiB a 1 MiB frame needs several
// wake-ups of both processes to cross. The FORCE variants (root) go past net.core.[rw]mem_max.
Napi::Value SetStreamBuffers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber())
    throw Napi::TypeError::New(env, "setStreamBuffers(fd, bytes)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  int bytes = info[1].As<Napi::Number>().Int32Value();
  if (bytes > 0) {  // 0: only report
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  }
  int send = 0, recv = 0;
  socklen_t len = sizeof send;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &send, &len) != 0)
    ThrowSystemError(env, errno, "getsockopt", "SO_SNDBUF of fd " + std::to_string(fd));
  len = sizeof recv;
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &recv, &len);
  Napi::Object out = Napi::Object::New(env);
  out.Set("send", Napi::Number::New(env, send));
  out.Set("recv", Napi::Number::New(env, recv));
  return out;
}

}  // namespace

void InitVsock(Napi::Env env, Napi::Object exports) {
  Napi::Function listenerClass = VsockListener::Define(env);
  exports.Set("VsockListener", listenerClass);
  // vsockListen(...) is `new VsockListener(...)`; the function keeps its own reference to the class.
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(listenerClass));
  env.AddCleanupHook([ctor]() { delete ctor; });
  exports.Set("vsockListen", Napi::Function::New(
                                 env,
                                 [ctor](const Napi::CallbackInfo& info) -> Napi::Value {
                                   std::vector<napi_value> args(info.Length());
                                   for (size_t i = 0; i < info.Length(); i++) args[i] = info[i];
                                   return ctor->New(args);
                                 },
                                 "vsockListen"));
  exports.Set("vsockConnect", Napi::Function::New<VsockConnect>(env, "vsockConnect"));
  exports.Set("localCid", Napi::Function::New<LocalCid>(env, "localCid"));
  exports.Set("peerAddress", Napi::Function::New<PeerAddress>(env, "peerAddress"));
  exports.Set("localAddress", Napi::Function::New<LocalAddress>(env, "localAddress"));
  exports.Set("socketpair", Napi::Function::New<SocketPair>(env, "socketpair"));
  exports.Set("setStreamBuffers", Napi::Function::New<SetStreamBuffers>(env, "setStreamBuffers"));
  exports.Set("VMADDR_CID_ANY", Napi::Number::New(env, VMADDR_CID_ANY));
  exports.Set("VMADDR_PORT_ANY", Napi::Number::New(env, VMADDR_PORT_ANY));
}
