import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

export type UwsModule = typeof import('@trufflesuite/uws-js-unofficial');

export type UwsAvailability =
  | { readonly native: true; readonly uws: UwsModule; readonly binary: string }
  | { readonly native: false; readonly reason: string };

const PACKAGE = '@trufflesuite/uws-js-unofficial';
let cached: UwsAvailability | undefined;

/**
 * Loads the native uWebSockets.js binary directly. The package's own entry point silently
 * swaps in a JavaScript emulation when the binary fails; loading the `.node` file ourselves
 * means "native: true" is only ever reported for the real thing.
 */
export function loadUws(): UwsAvailability {
  if (cached) return cached;
  cached = probe();
  return cached;
}

function probe(): UwsAvailability {
  const require = createRequire(import.meta.url);
  let packageDir: string;
  try {
    packageDir = dirname(require.resolve(`${PACKAGE}/package.json`));
  } catch {
    return { native: false, reason: `${PACKAGE} is not installed` };
  }
  const file = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  const binary = join(packageDir, 'binaries', file);
  if (!existsSync(binary)) {
    return {
      native: false,
      reason: `${PACKAGE} has no native binary for ${process.platform}-${process.arch} Node ABI ${process.versions.modules} (Node ${process.versions.node})`,
    };
  }
  try {
    const uws = require(binary) as UwsModule;
    // The JS fallback lacks SSLApp; its presence proves the native addon loaded.
    if (typeof uws.SSLApp !== 'function' || typeof uws.App !== 'function') {
      return { native: false, reason: `${binary} did not export the native uWS API` };
    }
    return { native: true, uws, binary };
  } catch (error) {
    return { native: false, reason: `${binary} failed to load: ${(error as Error).message}` };
  }
}
