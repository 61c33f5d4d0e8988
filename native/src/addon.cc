#include "addon.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitVsock(env, exports);
  InitUvStream(env, exports);
  InitFuse(env, exports);
  InitSys(env, exports);
  InitSystemd(env, exports);
  InitInotify(env, exports);
  return exports;
}

NODE_API_MODULE(dirvisor_native, Init)
