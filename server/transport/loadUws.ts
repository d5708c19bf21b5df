import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The native uWebSockets.js API Parley uses. Both packages below load a `.node` file that exports
 * it (App, SSLApp, us_socket_local_port, us_listen_socket_close, _cfg, ...); the v20.30 package's
 * types describe it (v20.57's `index.d.ts` only omits the undocumented `_cfg`).
 */
export type UwsModule = typeof import('@trufflesuite/uws-js-unofficial');

/** A package that ships uWebSockets.js binaries, in the order `--transport auto` tries them. */
export interface UwsPackage {
  readonly name: string;
  /** The uWebSockets.js release its binaries were built from, for the log. */
  readonly version: string;
  /** What `require.resolve` finds without running the package (its `exports` may hide package.json). */
  readonly resolveSpecifier: string;
  /** The binaries' folder, relative to the resolved file's folder. */
  readonly binaryFolder: string;
}

/**
 * v20.57 first: binaries for Node 20, 22, 24 and 25 (ABI 115, 127, 137, 141) on linux x64/arm64,
 * darwin and win32, but its Linux builds need glibc 2.38 (Debian 13, Ubuntu 24.04). Then v20.30:
 * Node 16, 18 and 20 only (ABI 93, 108, 115), and it loads on older glibc (Debian 12). Neither
 * includes uWebSockets PR #1929 (the fix for the corked async upgrade): v20.57 was published on
 * 2026-04-03, the fix was proposed in July 2026.
 */
export const UWS_PACKAGES: readonly UwsPackage[] = [
  { name: '@btc-vision/uwebsockets.js', version: '20.57', resolveSpecifier: '@btc-vision/uwebsockets.js', binaryFolder: '.' },
  { name: '@trufflesuite/uws-js-unofficial', version: '20.30', resolveSpecifier: '@trufflesuite/uws-js-unofficial/package.json', binaryFolder: 'binaries' },
];

export type UwsAvailability =
  | {
      readonly native: true;
      readonly uws: UwsModule;
      readonly binary: string;
      readonly version: string;
      /** Why the packages tried before this one did not load; empty when the first one did. */
      readonly skipped: readonly string[];
    }
  | { readonly native: false; readonly reason: string };

/** The running Node and platform, as `process` reports them. */
export interface UwsTarget {
  readonly platform: string;
  readonly arch: string;
  /** `process.versions.modules`: the ABI a binary's name carries. */
  readonly modules: string;
  readonly node: string;
}

export interface UwsProbeDeps {
  /** The resolved file of a specifier, or undefined when the package is not installed. */
  resolve(specifier: string): string | undefined;
  exists(path: string): boolean;
  /** Loads a `.node` file (throws what dlopen throws: a missing glibc version, a wrong ABI). */
  load(path: string): unknown;
}

let cached: UwsAvailability | undefined;

/**
 * Loads the first native uWebSockets.js binary that works here. Each `.node` file is loaded
 * directly, never through a package's entry point: v20.30's entry point silently swaps in a
 * JavaScript emulation when its binary fails, so "native: true" is only reported for the real
 * thing (and checked by SSLApp, which only the native module exports).
 */
export function loadUws(): UwsAvailability {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  cached = probeUws(
    UWS_PACKAGES,
    {
      platform: process.platform,
      arch: process.arch,
      modules: process.versions.modules,
      node: process.versions.node,
    },
    {
      resolve(specifier) {
        try {
          return require.resolve(specifier);
        } catch {
          return undefined;
        }
      },
      exists: existsSync,
      load: (path) => require(path) as unknown,
    },
  );
  return cached;
}

/** Tries `packages` in order; the first whose binary loads and exports the native API wins. */
export function probeUws(packages: readonly UwsPackage[], target: UwsTarget, deps: UwsProbeDeps): UwsAvailability {
  const reasons: string[] = [];
  for (const candidate of packages) {
    const result = probePackage(candidate, target, deps);
    if (typeof result !== 'string') return { ...result, skipped: reasons };
    reasons.push(`v${candidate.version} (${candidate.name}): ${result}`);
  }
  return { native: false, reason: reasons.length > 0 ? reasons.join('; ') : 'no uWebSockets.js package is known' };
}

function probePackage(candidate: UwsPackage, target: UwsTarget, deps: UwsProbeDeps): { native: true; uws: UwsModule; binary: string; version: string } | string {
  const resolved = deps.resolve(candidate.resolveSpecifier);
  if (resolved === undefined) return 'not installed';
  const file = `uws_${target.platform}_${target.arch}_${target.modules}.node`;
  const binary = join(dirname(resolved), candidate.binaryFolder, file);
  if (!deps.exists(binary)) return `no binary for ${target.platform}-${target.arch} Node ABI ${target.modules} (Node ${target.node})`;
  let uws: Partial<UwsModule>;
  try {
    uws = deps.load(binary) as Partial<UwsModule>;
  } catch (error) {
    return `${binary} failed to load: ${firstLine((error as Error).message).replace(` (required by ${binary})`, '')}`;
  }
  // The JS emulation lacks SSLApp; its presence proves the native addon loaded.
  if (typeof uws.SSLApp !== 'function' || typeof uws.App !== 'function') return `${binary} did not export the native uWS API`;
  return { native: true, uws: uws as UwsModule, binary, version: candidate.version };
}

function firstLine(message: string): string {
  return message.split('\n', 1)[0] ?? message;
}
