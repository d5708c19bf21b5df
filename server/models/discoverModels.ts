import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../config.js';
import { modelFileError } from '../engine/loadLlamaModel.js';
import { readModelFile, type ModelFile } from './ModelFile.js';

export interface ModelSources {
  /** Files named one by one (`--model`): each must be readable, or the start fails. */
  readonly models: readonly string[];
  /** Folders whose `*.gguf` files are served (`--models-dir`, the pulled folder); a missing folder is skipped. */
  readonly dirs: readonly string[];
  /** The id new conversations get; absent: the first named file, else the first by id. */
  readonly defaultModel?: string;
}

export interface DiscoveredModels {
  readonly files: readonly ModelFile[];
  /** Absent when no model was found (then the caller serves the demo model). */
  readonly defaultModel: string | undefined;
  /** Files in the folders that cannot be served, and why (for the startup log). */
  readonly skipped: ReadonlyArray<{ readonly path: string; readonly reason: string }>;
}

/** `--default-model` names no model found: a configuration that cannot be served (exit code 2). */
export class UnknownDefaultModelError extends ConfigError {
  override name = 'UnknownDefaultModelError';
}

/**
 * Finds the models to serve. A named file that cannot be read fails the start (ModelLoadError);
 * a bad file in a folder is skipped with its reason, so one broken download does not keep the
 * rest from being served. Two files with the same id: the named file wins, else the first folder.
 */
export async function discoverModels(sources: ModelSources): Promise<DiscoveredModels> {
  const files: ModelFile[] = [];
  const skipped: Array<{ path: string; reason: string }> = [];
  const seenPaths = new Set<string>();
  for (const path of sources.models) {
    if (seenPaths.has(path)) continue;
    seenPaths.add(path);
    let file: ModelFile;
    try {
      file = await readModelFile(path);
    } catch (error) {
      throw modelFileError(path, error);
    }
    const clash = files.find((other) => other.id === file.id);
    if (clash) throw modelFileError(path, new Error(`another model, ${clash.path}, has the same name '${file.id}'; rename one file`));
    files.push(file);
  }
  for (const dir of sources.dirs) {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((name) => name.toLowerCase().endsWith('.gguf')).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    for (const name of names) {
      const path = join(dir, name);
      if (seenPaths.has(path)) continue;
      seenPaths.add(path);
      try {
        const file = await readModelFile(path);
        const clash = files.find((other) => other.id === file.id);
        if (clash) {
          skipped.push({ path, reason: `another model, ${clash.path}, has the same name '${file.id}'` });
          continue;
        }
        files.push(file);
      } catch (error) {
        skipped.push({ path, reason: modelFileError(path, error).reason });
      }
    }
  }
  let defaultModel = sources.defaultModel;
  if (defaultModel !== undefined && !files.some((file) => file.id === defaultModel)) {
    throw new UnknownDefaultModelError(`--default-model '${defaultModel}' is not among the models found (${files.map((file) => file.id).join(', ') || 'none'})`);
  }
  defaultModel ??= sources.models.length > 0 ? files[0]?.id : [...files].sort((a, b) => a.id.localeCompare(b.id))[0]?.id;
  return { files, defaultModel, skipped };
}
