// systemd service integration without libsystemd: the sd_notify(3) datagram protocol and the
// watchdog interval (sd_watchdog_enabled(3)). Exposed on the addon as `systemd`:
//   systemd.notify(state: string, socketPath?: string): boolean
//       Sends `state` ("READY=1", "WATCHDOG=1", "STATUS=...", newline-separated assignments) as
//       one datagram to socketPath, or to $NOTIFY_SOCKET when socketPath is undefined. A path
//       starting with '@' is in the abstract namespace. Returns false when there is no socket
//       (not started by systemd, or Type= is not notify); throws a system error (code, errno,
//       syscall) when the send fails.
//   systemd.watchdogUsec(): number
//       $WATCHDOG_USEC when it is set, positive and meant for this process ($WATCHDOG_PID unset
//       or equal to getpid()); otherwise 0.
// Blocking is not a concern: AF_UNIX datagram sends to a bound socket never wait on the peer
// beyond its receive queue, and systemd drains it; MSG_DONTWAIT keeps even that bounded.
#include "addon.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

namespace {

// Node's system-error shape: code "ECONNREFUSED", errno -111 (libuv's negative errno), syscall.
Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const std::string& what) {
  Napi::Error e = Napi::Error::New(env, what + ": " + uv_err_name(-err) + " (" + std::strerror(err) + ")");
  e.Set("code", Napi::String::New(env, uv_err_name(-err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

Napi::Value Notify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString())
    throw Napi::TypeError::New(env, "systemd.notify(state: string, socketPath?: string)");
  std::string state = info[0].As<Napi::String>().Utf8Value();

  std::string path;
  if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsString()) throw Napi::TypeError::New(env, "systemd.notify: socketPath must be a string");
    path = info[1].As<Napi::String>().Utf8Value();
  } else {
    const char* e = std::getenv("NOTIFY_SOCKET");
    if (e) path = e;
  }
  if (path.empty()) return Napi::Boolean::New(env, false);

  // Only AF_UNIX here: "/path" or "@abstract". (systemd >= 253 also allows "vsock:CID:PORT"
  // for notifications out of a VM; that is not something a host daemon is given.)
  if (path[0] != '/' && path[0] != '@')
    throw SystemError(env, EAFNOSUPPORT, "connect", "NOTIFY_SOCKET \"" + path + "\" is not an AF_UNIX path");

  struct sockaddr_un sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.size() > sizeof sa.sun_path)
    throw SystemError(env, ENAMETOOLONG, "connect", "NOTIFY_SOCKET path too long");
  std::memcpy(sa.sun_path, path.data(), path.size());
  if (path[0] == '@') sa.sun_path[0] = '\0';
  // A path socket may include the trailing NUL; the abstract one must not (its length is exact).
  socklen_t len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size());
  if (path[0] == '/' && path.size() < sizeof sa.sun_path) len += 1;

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw SystemError(env, errno, "socket", "cannot create the notification socket");
  ssize_t n;
  do {
    n = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
               reinterpret_cast<struct sockaddr*>(&sa), len);
  } while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) throw SystemError(env, err, "sendto", "cannot notify systemd at " + path);
  return Napi::Boolean::New(env, true);
}

Napi::Value WatchdogUsec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (!usec || !*usec) return Napi::Number::New(env, 0);
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(usec, &end, 10);
  if (errno != 0 || *end != '\0' || v == 0) return Napi::Number::New(env, 0);
  const char* pid = std::getenv("WATCHDOG_PID");
  if (pid && *pid) {
    char* pend = nullptr;
    errno = 0;
    unsigned long long p = std::strtoull(pid, &pend, 10);
    if (errno != 0 || *pend != '\0' || p != static_cast<unsigned long long>(getpid()))
      return Napi::Number::New(env, 0);
  }
  return Napi::Number::New(env, static_cast<double>(v));
}

}  // namespace

void InitSystemd(Napi::Env env, Napi::Object exports) {
  Napi::Object sd = Napi::Object::New(env);
  sd.Set("notify", Napi::Function::New(env, Notify, "notify"));
  sd.Set("watchdogUsec", Napi::Function::New(env, WatchdogUsec, "watchdogUsec"));
  exports.Set("systemd", sd);
}
