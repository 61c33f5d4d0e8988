// inotify(7) for the host agent's storage watcher: create an instance, add and remove watches.
// Reading the events is not done here: the fd is handed to a UvStream (uv_stream.cc), whose libuv
// pipe handle reads whole events from it on the event loop; native/inotify.ts parses them.
//
//   inotifyInit(): number                          an IN_NONBLOCK | IN_CLOEXEC inotify fd
//   inotifyAddWatch(fd, path, mask): number        the watch descriptor; throws with .errno
//   inotifyRmWatch(fd, wd): number                 0 or a positive errno (EINVAL: already gone)
//   inotifyConstants: { IN_MODIFY, ... }
#include "addon.h"

#include <sys/inotify.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace {

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what) {
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  return e;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) throw ErrnoError(info.Env(), errno, "inotify_init1");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value AddWatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !(info[1].IsString() || info[1].IsBuffer()) || !info[2].IsNumber())
    throw Napi::TypeError::New(env, "inotifyAddWatch(fd, path, mask)");
  std::string path = info[1].IsString()
                         ? info[1].As<Napi::String>().Utf8Value()
                         : std::string(info[1].As<Napi::Buffer<char>>().Data(), info[1].As<Napi::Buffer<char>>().Length());
  int wd = inotify_add_watch(info[0].As<Napi::Number>().Int32Value(), path.c_str(),
                             info[2].As<Napi::Number>().Uint32Value());
  if (wd < 0) throw ErrnoError(env, errno, "inotify_add_watch");
  return Napi::Number::New(env, wd);
}

Napi::Value RmWatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) throw Napi::TypeError::New(env, "inotifyRmWatch(fd, wd)");
  int rc = inotify_rm_watch(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value());
  return Napi::Number::New(env, rc < 0 ? errno : 0);
}

}  // namespace

void InitInotify(Napi::Env env, Napi::Object exports) {
  exports.Set("inotifyInit", Napi::Function::New(env, Init, "inotifyInit"));
  exports.Set("inotifyAddWatch", Napi::Function::New(env, AddWatch, "inotifyAddWatch"));
  exports.Set("inotifyRmWatch", Napi::Function::New(env, RmWatch, "inotifyRmWatch"));
  Napi::Object c = Napi::Object::New(env);
#define K(name) c.Set(#name, Napi::Number::New(env, name));
  K(IN_ACCESS) K(IN_MODIFY) K(IN_ATTRIB) K(IN_CLOSE_WRITE) K(IN_CLOSE_NOWRITE) K(IN_OPEN)
  K(IN_MOVED_FROM) K(IN_MOVED_TO) K(IN_CREATE) K(IN_DELETE) K(IN_DELETE_SELF) K(IN_MOVE_SELF)
  K(IN_UNMOUNT) K(IN_Q_OVERFLOW) K(IN_IGNORED) K(IN_ONLYDIR) K(IN_DONT_FOLLOW) K(IN_EXCL_UNLINK)
  K(IN_MASK_ADD) K(IN_ISDIR)
#undef K
  exports.Set("inotifyConstants", c);
}
