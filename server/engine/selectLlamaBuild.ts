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
  return { build: LlamaBuild.prebuilt, llama: await load.prebuilt(), reason: 'no native build (npm run build:llama makes one)' };
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim().slice(0, 300);
}
