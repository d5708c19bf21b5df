import { readFileSync } from 'node:fs';
import { findMissingLockEntries, PLATFORM_PACKAGE_OWNERS, type Lockfile } from './findMissingLockEntries.js';

/**
 * `.ci/run`: fails when package-lock.json (or the lockfile named as the first argument) lacks a platform binary package of node-llama-cpp,
 * rollup, esbuild or the uWebSockets.js packages (see findMissingLockEntries).
 */
const lock = JSON.parse(readFileSync(process.argv[2] ?? new URL('../package-lock.json', import.meta.url), 'utf8')) as Lockfile;
const problems = findMissingLockEntries(lock);
if (problems.length > 0) {
  console.error(`package-lock.json is incomplete for other platforms:\n  ${problems.join('\n  ')}`);
  console.error('Regenerate it with no node_modules and an empty npm cache (README: "The lockfile"); pin a version the registry serves for every platform.');
  process.exit(1);
}
console.log(`package-lock.json lists every platform package of ${PLATFORM_PACKAGE_OWNERS.join(', ')}`);
