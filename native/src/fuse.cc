#include "addon.h"

void InitFuse(Napi::Env env, Napi::Object exports) {}
