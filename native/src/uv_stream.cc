#include "addon.h"

void InitUvStream(Napi::Env env, Napi::Object exports) {}
