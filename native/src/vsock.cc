#include "addon.h"

void InitVsock(Napi::Env env, Napi::Object exports) {}
