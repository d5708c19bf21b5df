/** The part of an npm lockfile (lockfileVersion 2 or 3) this check reads. */
export interface Lockfile {
  readonly packages: Readonly<Record<string, { readonly version?: string; readonly optionalDependencies?: Readonly<Record<string, string>> }>>;
}

/**
 * The packages whose platform binaries must all be in the lockfile. npm writes a lockfile from
 * the packages it could fetch: an optional dependency the registry did not serve, or one npm left
 * out because another platform's node_modules was the source, is silently missing, and then npm
 * may not install it on the machine that needs it (npm/cli #4828, #8320).
 */
export const PLATFORM_PACKAGE_OWNERS = ['node-llama-cpp', 'rollup', 'esbuild', '@btc-vision/uwebsockets.js', '@trufflesuite/uws-js-unofficial'] as const;

const EXACT_VERSION = /^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;

/**
 * Every optional dependency of each owner (wherever the owner sits in the tree) that the lockfile
 * lacks, or holds at another version than an exact spec names, as readable lines; an owner that is
 * not in the lockfile at all is reported too. Empty when the lockfile is complete.
 */
export function findMissingLockEntries(lock: Lockfile, owners: readonly string[] = PLATFORM_PACKAGE_OWNERS): string[] {
  const problems: string[] = [];
  for (const owner of owners) {
    const locations = Object.keys(lock.packages).filter((path) => path === `node_modules/${owner}` || path.endsWith(`/node_modules/${owner}`));
    if (locations.length === 0) {
      problems.push(`${owner} is not in the lockfile`);
      continue;
    }
    for (const location of locations) {
      const entry = lock.packages[location];
      for (const [name, spec] of Object.entries(entry?.optionalDependencies ?? {})) {
        const found = resolveFrom(lock, location, name);
        const label = `${owner}@${entry?.version ?? '?'} needs ${name}@${spec}`;
        if (found === undefined) problems.push(`${label}: missing from the lockfile`);
        else if (EXACT_VERSION.test(spec) && found.version !== spec) problems.push(`${label}: the lockfile has ${found.version ?? 'no version'} at ${found.path}`);
      }
    }
  }
  return problems;
}

/** Where Node's resolution from `location` finds `name`: its own node_modules, then each parent's. */
function resolveFrom(lock: Lockfile, location: string, name: string): { path: string; version: string | undefined } | undefined {
  let base = location;
  for (;;) {
    const path = base === '' ? `node_modules/${name}` : `${base}/node_modules/${name}`;
    const entry = lock.packages[path];
    if (entry !== undefined) return { path, version: entry.version };
    if (base === '') return undefined;
    const at = base.lastIndexOf('/node_modules/');
    base = at < 0 ? '' : base.slice(0, at);
  }
}
