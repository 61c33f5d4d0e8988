// UvStream: a libuv pipe handle over any connected stream fd (AF_VSOCK, AF_UNIX...), exposed to JS
// as a small read/write primitive. Node's net.Socket cannot adopt an AF_VSOCK fd, but libuv's pipe
// handle can drive any stream socket with read()/writev(), so we get the event loop's readiness
// handling, write queue and shutdown for free. The stream.Duplex on top lives in native/vsock.ts.
//
// JS API:
//   new UvStream(fd, onRead(buf: Buffer | null, err?: Error))   takes ownership of fd
//   readStart() / readStop()        backpressure: the Duplex stops reading when push() says so
//   write(buffers: ArrayBufferView[], cb(err | null))   one writev, no copy
//   shutdown(cb(err | null))        half-close (SHUT_WR) once queued writes are flushed
//       readStart/write/shutdown return 0, or a negative errno (e.g. closed: EBADF) in which case
//       cb is never called. Returned, not thrown: a throw that happens while a Worker is being
//       terminated cannot reach JS, and node-addon-api then aborts the process.
//   close(cb?)                      closes the fd; pending writes fail with ECANCELED first
//   ref() / unref(), writeQueueSize, fd, closed
//
// Callbacks from libuv into JS go through napi_make_callback (async_hooks context, nextTick queue
// drained after); an exception JS throws there becomes an uncaught exception, not a silent drop.
// That path uses the C API on purpose: while the environment shuts down (Worker.terminate(),
// process exit) napi calls that may run JS fail, and node-addon-api turns such a failure into an
// abort. We just skip the callback instead.
//
// Lifetime: the JS object is held strongly from construction until libuv's close callback, so it
// cannot be collected under a live handle. If the environment goes away first, an async cleanup
// hook closes the handle without calling JS, and Node waits for it before closing the loop.
#include "addon.h"

#include <uv.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

// A Node-style system error (.code 'ECONNRESET', .errno -104, .syscall 'read'), built with the C
// API so it is safe in libuv callbacks. nullptr if napi refuses (environment shutting down).
napi_value SystemError(napi_env env, int uvErr, const char* syscall) {
  std::string message =
      std::string(syscall) + " failed: " + uv_err_name(uvErr) + " (" + uv_strerror(uvErr) + ")";
  napi_value msg, err, code, errnum, sys;
  if (napi_create_string_utf8(env, message.c_str(), message.size(), &msg) != napi_ok ||
      napi_create_error(env, nullptr, msg, &err) != napi_ok ||
      napi_create_string_utf8(env, uv_err_name(uvErr), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_int32(env, uvErr, &errnum) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys) != napi_ok ||
      napi_set_named_property(env, err, "code", code) != napi_ok ||
      napi_set_named_property(env, err, "errno", errnum) != napi_ok ||
      napi_set_named_property(env, err, "syscall", sys) != napi_ok)
    return nullptr;
  return err;
}

// For methods called from JS, where throwing is the normal way out.
[[noreturn]] void ThrowSystemError(Napi::Env env, int uvErr, const char* syscall) {
  napi_value err = SystemError(env, uvErr, syscall);
  if (err == nullptr) throw Napi::Error::New(env, std::string(syscall) + " failed");
  throw Napi::Error(env, err);
}

// Calls fn from a libuv callback. A JS exception is re-raised as an uncaught exception (process
// 'uncaughtException', or exit). During shutdown every step is a no-op.
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

struct WriteReq {
  uv_write_t req;
  Napi::ObjectReference keep;  // the buffers: their memory must outlive the write
  Napi::FunctionReference cb;
};

struct ShutdownReq {
  uv_shutdown_t req;
  Napi::FunctionReference cb;
};

class UvStream : public Napi::ObjectWrap<UvStream> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "UvStream",
                       {
                           InstanceMethod<&UvStream::ReadStart>("readStart"),
                           InstanceMethod<&UvStream::ReadStop>("readStop"),
                           InstanceMethod<&UvStream::Write>("write"),
                           InstanceMethod<&UvStream::Shutdown>("shutdown"),
                           InstanceMethod<&UvStream::Close>("close"),
                           InstanceMethod<&UvStream::RefHandle>("ref"),
                           InstanceMethod<&UvStream::UnrefHandle>("unref"),
                           InstanceAccessor<&UvStream::WriteQueueSize>("writeQueueSize"),
                           InstanceAccessor<&UvStream::Fd>("fd"),
                           InstanceAccessor<&UvStream::Closed>("closed"),
                       });
  }

  UvStream(const Napi::CallbackInfo& info) : Napi::ObjectWrap<UvStream>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction())
      throw Napi::TypeError::New(env, "UvStream(fd: number, onRead: function)");
    int fd = info[0].As<Napi::Number>().Int32Value();
    if (fd < 0) throw Napi::TypeError::New(env, "UvStream: fd must be >= 0");

    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no uv loop");

    handle_ = new uv_pipe_t;
    uv_pipe_init(loop, handle_, 0);
    int err = uv_pipe_open(handle_, fd);
    if (err != 0) {
      // The fd was not adopted: it stays the caller's. Only the handle struct goes away.
      uv_close(reinterpret_cast<uv_handle_t*>(handle_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
      handle_ = nullptr;
      ThrowSystemError(env, err, "uv_pipe_open");
    }
    handle_->data = this;
    onRead_ = Napi::Persistent(info[1].As<Napi::Function>());
    async_ = std::make_unique<Napi::AsyncContext>(env, "dirvisor:UvStream", Value());
    // The JS object must not be collected while libuv may still call back into it.
    Ref();
    napi_add_async_cleanup_hook(env, OnEnvCleanup, this, &cleanupHook_);
  }

  ~UvStream() override {
    // Not reached with an open handle (strong ref until the close callback, cleanup hook at
    // teardown). Defensive anyway: detach so later libuv callbacks touch nothing of ours.
    if (handle_ != nullptr) {
      handle_->data = nullptr;
      if (!closing_)
        uv_close(reinterpret_cast<uv_handle_t*>(handle_),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
      onRead_.SuppressDestruct();
      closeCb_.SuppressDestruct();
      (void)async_.release();  // leaked on purpose: napi calls are unsafe here
    }
  }

 private:
  uv_stream_t* Stream() { return reinterpret_cast<uv_stream_t*>(handle_); }

  bool IsOpen() const { return handle_ != nullptr && !closing_; }

  static Napi::Value Status(Napi::Env env, int uvErr) { return Napi::Number::New(env, uvErr); }

  // Calls a JS callback from a libuv callback, with this object as `this`.
  void Invoke(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) {
    if (envGone_ || fn.IsEmpty()) return;
    CallFromLoop(Env(), fn, Value(), args, *async_);
  }

  Napi::Value ReadStart(const Napi::CallbackInfo& info) {
    if (!IsOpen()) return Status(info.Env(), UV_EBADF);
    int err = uv_read_start(Stream(), OnAlloc, OnRead);
    // UV_EALREADY cannot happen with libuv >= 1.38 (restarting is a no-op); keep it harmless anyway.
    return Status(info.Env(), err == UV_EALREADY ? 0 : err);
  }

  Napi::Value ReadStop(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr && !closing_) uv_read_stop(Stream());
    return info.Env().Undefined();
  }

  static void OnAlloc(uv_handle_t*, size_t suggested, uv_buf_t* buf) {
    // Each read gets its own block that becomes the JS Buffer (no copy). Failure → UV_ENOBUFS.
    buf->base = static_cast<char*>(std::malloc(suggested));
    buf->len = buf->base != nullptr ? suggested : 0;
  }

  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    auto* self = static_cast<UvStream*>(stream->data);
    if (self == nullptr || self->envGone_ || nread <= 0) std::free(buf->base);
    if (self == nullptr || self->envGone_ || nread == 0) return;  // 0: EAGAIN, nothing to report
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    if (nread == UV_EOF) {
      self->Invoke(self->onRead_, {env.Null()});
      return;
    }
    if (nread < 0) {
      if (napi_value err = SystemError(env, static_cast<int>(nread), "read"))
        self->Invoke(self->onRead_, {env.Null(), err});
      return;
    }
    char* data = buf->base;
    size_t len = static_cast<size_t>(nread);
    // Don't let a small message pin a 64 KiB block while JS holds on to it.
    if (len < buf->len / 2) {
      if (char* smaller = static_cast<char*>(std::realloc(data, len))) data = smaller;
    }
    napi_value chunk;
    auto freeData = [](napi_env, void* p, void*) { std::free(p); };
    if (napi_create_external_buffer(env, len, data, freeData, nullptr, &chunk) != napi_ok) {
      std::free(data);
      return;
    }
    self->Invoke(self->onRead_, {chunk});
  }

  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray() || !info[1].IsFunction())
      throw Napi::TypeError::New(env, "write(buffers: ArrayBufferView[], cb: function)");
    if (!IsOpen()) return Status(env, UV_EBADF);
    Napi::Array in = info[0].As<Napi::Array>();
    uint32_t n = in.Length();

    // Copy the list so JS cannot swap elements out (and let them be collected) mid-write.
    Napi::Array keep = Napi::Array::New(env, n);
    std::vector<uv_buf_t> bufs;
    bufs.reserve(n);
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value v = in.Get(i);
      uv_buf_t b;
      if (v.IsTypedArray()) {
        Napi::TypedArray ta = v.As<Napi::TypedArray>();
        b.base = static_cast<char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
        b.len = ta.ByteLength();  // not uv_buf_init(): it takes an unsigned int
      } else if (v.IsDataView()) {
        Napi::DataView dv = v.As<Napi::DataView>();
        b.base = static_cast<char*>(dv.Data());
        b.len = dv.ByteLength();
      } else {
        throw Napi::TypeError::New(env, "write: every chunk must be a Buffer/Uint8Array");
      }
      keep.Set(i, v);
      bufs.push_back(b);
    }

    auto* req = new WriteReq;
    req->keep = Napi::Persistent(keep.As<Napi::Object>());
    req->cb = Napi::Persistent(info[1].As<Napi::Function>());
    // libuv copies the uv_buf_t array; the bytes themselves stay in the JS buffers.
    int err = uv_write(&req->req, Stream(), bufs.data(), n, OnWrite);
    if (err != 0) delete req;
    return Status(env, err);
  }

  static void OnWrite(uv_write_t* uvreq, int status) {
    std::unique_ptr<WriteReq> req(reinterpret_cast<WriteReq*>(uvreq));
    auto* self = static_cast<UvStream*>(uvreq->handle->data);
    if (self == nullptr) {  // detached by the destructor: leave the env's references alone
      req->keep.SuppressDestruct();
      req->cb.SuppressDestruct();
      return;
    }
    if (self->envGone_) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    napi_value arg = status == 0 ? env.Null() : SystemError(env, status, "write");
    if (arg != nullptr) self->Invoke(req->cb, {arg});
  }

  Napi::Value Shutdown(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction())
      throw Napi::TypeError::New(env, "shutdown(cb: function)");
    if (!IsOpen()) return Status(env, UV_EBADF);
    auto* req = new ShutdownReq;
    req->cb = Napi::Persistent(info[0].As<Napi::Function>());
    int err = uv_shutdown(&req->req, Stream(), OnShutdown);
    if (err != 0) delete req;
    return Status(env, err);
  }

  static void OnShutdown(uv_shutdown_t* uvreq, int status) {
    std::unique_ptr<ShutdownReq> req(reinterpret_cast<ShutdownReq*>(uvreq));
    auto* self = static_cast<UvStream*>(uvreq->handle->data);
    if (self == nullptr) {
      req->cb.SuppressDestruct();
      return;
    }
    if (self->envGone_) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    napi_value arg = status == 0 ? env.Null() : SystemError(env, status, "shutdown");
    if (arg != nullptr) self->Invoke(req->cb, {arg});
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    // Idempotent: a second close is ignored (its callback too, as with net.Socket.destroy).
    if (handle_ == nullptr || closing_) return info.Env().Undefined();
    closing_ = true;
    if (info.Length() > 0 && info[0].IsFunction())
      closeCb_ = Napi::Persistent(info[0].As<Napi::Function>());
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), OnClose);
    return info.Env().Undefined();
  }

  static void OnClose(uv_handle_t* h) {
    auto* self = static_cast<UvStream*>(h->data);
    delete reinterpret_cast<uv_pipe_t*>(h);
    if (self == nullptr) return;
    self->handle_ = nullptr;
    Napi::HandleScope scope(self->Env());
    self->Invoke(self->closeCb_, {});
    self->closeCb_.Reset();
    self->onRead_.Reset();  // break the JS cycle object -> callback -> closure -> object
    self->async_.reset();
    napi_remove_async_cleanup_hook(self->cleanupHook_);  // also: "done" for a teardown close
    self->cleanupHook_ = nullptr;
    self->Unref();  // from now on the object may be collected
  }

  static void OnEnvCleanup(napi_async_cleanup_hook_handle, void* arg) {
    auto* self = static_cast<UvStream*>(arg);
    self->envGone_ = true;
    if (!self->closing_) {
      self->closing_ = true;
      uv_close(reinterpret_cast<uv_handle_t*>(self->handle_), OnClose);
    }
  }

  Napi::Value RefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value WriteQueueSize(const Napi::CallbackInfo& info) {
    size_t n = handle_ != nullptr ? handle_->write_queue_size : 0;
    return Napi::Number::New(info.Env(), static_cast<double>(n));
  }

  Napi::Value Fd(const Napi::CallbackInfo& info) {
    uv_os_fd_t fd = -1;
    if (handle_ == nullptr || closing_ ||
        uv_fileno(reinterpret_cast<uv_handle_t*>(handle_), &fd) != 0)
      fd = -1;
    return Napi::Number::New(info.Env(), fd);
  }

  Napi::Value Closed(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), handle_ == nullptr || closing_);
  }

  uv_pipe_t* handle_ = nullptr;  // heap: it may outlive this object (see destructor)
  bool closing_ = false;
  bool envGone_ = false;  // environment teardown started: no more JS
  napi_async_cleanup_hook_handle cleanupHook_ = nullptr;
  Napi::FunctionReference onRead_;
  Napi::FunctionReference closeCb_;
  std::unique_ptr<Napi::AsyncContext> async_;
};

}  // namespace

void InitUvStream(Napi::Env env, Napi::Object exports) {
  exports.Set("UvStream", UvStream::Define(env));
}
