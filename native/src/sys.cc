#include "addon.h"

void InitSys(Napi::Env env, Napi::Object exports) {}
