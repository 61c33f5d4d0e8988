// Loads the compiled addon (build/Release/dirvisor_native.node). Packaged installs may point
// DIRVISOR_NATIVE at the file instead.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));

function locate(): string {
  if (process.env.DIRVISOR_NATIVE) return process.env.DIRVISOR_NATIVE;
  // dist/native/index.js -> <root>/build/Release
  return path.resolve(here, '..', '..', 'build', 'Release', 'dirvisor_native.node');
}

/** The addon file this process loaded (a helper process loads the same one). */
export const nativePath = locate();

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const native: any = require(nativePath);
