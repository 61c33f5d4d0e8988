// Each native module registers its exports on the addon object. One responsibility per file:
//   vsock.cc     AF_VSOCK sockets (socket/bind/listen/accept/connect, CIDs)
//   uv_stream.cc a libuv pipe handle over any stream fd, exposed to JS as a read/write primitive
//   fuse.cc      libfuse3 low-level session: requests to JS, replies and notifications back
//   sys.cc       fd-relative file syscalls run off the JS thread, with per-call fs credentials
//   inotify.cc   inotify instances and watches (events are read through a UvStream)
#pragma once
#include <napi.h>

void InitVsock(Napi::Env env, Napi::Object exports);
void InitUvStream(Napi::Env env, Napi::Object exports);
void InitFuse(Napi::Env env, Napi::Object exports);
void InitSys(Napi::Env env, Napi::Object exports);
void InitSystemd(Napi::Env env, Napi::Object exports);
void InitInotify(Napi::Env env, Napi::Object exports);
