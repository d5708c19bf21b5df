import { LlamaBuild, LlamaBuildChoice } from './LlamaBuild.js';
import { LlamaBuildUnavailableError } from './LlamaBuildUnavailableError.js';

export interface LlamaBuildLoaders<T> {
  /** Loads the native build; rejects when there is none (or it does not load). */
  readonly native: () => Promise<T>;
  readonly prebuilt: () => Promise<T>;
}

export interface SelectedLlamaBuild<T> {
  readonly build: LlamaBuild;
  readonly llama: T;
  /** Why this build runs, for the startup log. */
  readonly reason: string;
}

/**
 * Why `auto` runs the prebuilt binary, and how to get the faster one: `npm install` builds it when
 * the machine has cmake and a C++ compiler (scripts/postinstall.ts), so a user reading this had
 * none then, opted out, or the build failed.
 */
export const PREBUILT_REASON =
  'no native build, so the prebuilt binary runs (slower on the CPU: 0.6-0.9× llama-server\'s tokens/s here, against about 1.0× for the native build); ' +
  'for the faster one, run `npm run build:llama` (needs cmake and a C++ compiler; minutes)';

/**
 * `auto` runs the native build when it loads, else the prebuilt binary; `native` fails with
 * LlamaBuildUnavailableError, naming the way to build one; `prebuilt` never looks for a native build.
 */
export async function selectLlamaBuild<T>(choice: LlamaBuildChoice, load: LlamaBuildLoaders<T>): Promise<SelectedLlamaBuild<T>> {
  if (choice === LlamaBuildChoice.prebuilt) return { build: LlamaBuild.prebuilt, llama: await load.prebuilt(), reason: 'requested' };
  let failure: string;
  try {
    return { build: LlamaBuild.native, llama: await load.native(), reason: 'native build of llama.cpp for this CPU' };
  } catch (error) {
    failure = error instanceof Error ? error.message : String(error);
  }
  if (choice === LlamaBuildChoice.native) {
    throw new LlamaBuildUnavailableError(
      `--llama-build native was requested but no native llama.cpp build loads (${oneLine(failure)}); ` +
        'run `npm run build:llama` (needs cmake and a C++ compiler), or use --llama-build auto',
    );
  }
  return { build: LlamaBuild.prebuilt, llama: await load.prebuilt(), reason: PREBUILT_REASON };
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim().slice(0, 300);
}
