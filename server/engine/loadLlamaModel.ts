import { stat } from 'node:fs/promises';
import { getLlama, getLlamaGpuTypes, Llama, LlamaLogLevel } from 'node-llama-cpp';
import type { LlamaModel } from 'node-llama-cpp';
import { GENERATOR_KIND_KEY } from '../../models/GeneratedModel.js';
import { GgufValidationError } from '../../models/gguf/GgufValidationError.js';
import { readGguf } from '../../models/gguf/readGguf.js';
import { validateLlamaGguf } from '../../models/gguf/validateLlamaGguf.js';
import { LlamaBuild, LlamaBuildChoice, NATIVE_CMAKE_OPTIONS } from './LlamaBuild.js';
import { chooseThreads } from './chooseThreads.js';
import { GpuChoice, type GpuLayersChoice, type LlamaDevice } from './GpuChoice.js';
import { selectLlamaBuild } from './selectLlamaBuild.js';
import { selectLlamaDevice } from './selectLlamaDevice.js';

export type LlamaLogger = (level: LlamaLogLevel, message: string) => void;

export interface LoadLlamaModelOptions {
  modelPath: string;
  /**
   * CPU threads for llama.cpp, or `auto` (chooseThreads: from the binary that runs, the math cores
   * and the model's size). Never node-llama-cpp's own default, which oversubscribes small machines.
   */
  threads: number | 'auto';
  /** Receives llama.cpp's warnings and errors while the model is alive. Without one they go to the console. */
  logger?: LlamaLogger;
  /**
   * The llama.cpp binary (see LlamaBuildChoice); `prebuilt` by default. One binary serves the
   * whole process: the first load decides, and a later load asking for the other one fails.
   */
  build?: LlamaBuildChoice;
  /**
   * The backend (see GpuChoice); `auto` by default. Like the binary, one backend serves the whole
   * process: a later load asking for another one fails.
   */
  gpu?: GpuChoice;
  /** Layers to offload when a GPU runs (see GpuLayersChoice); `auto` by default. */
  gpuLayers?: GpuLayersChoice;
  /** Context tokens the model will hold in all (slots × context size): `auto` leaves VRAM for them. */
  fitContextTokens?: number;
}

export interface LoadedLlamaModel {
  readonly llama: Llama;
  readonly model: LlamaModel;
  /** The llama.cpp binary that really runs. */
  readonly build: LlamaBuild;
  /** Why that binary runs, for the startup log. */
  readonly buildReason: string;
  /** The backend llama.cpp computes with (node-llama-cpp's `llama.gpu`); `false` is the CPU. */
  readonly device: LlamaDevice;
  /** Why that backend, for the startup log. */
  readonly deviceReason: string;
  /** Layers offloaded to the GPU (node-llama-cpp's `model.gpuLayers`); 0 on the CPU. */
  readonly gpuLayers: number;
  /** The model's layers, as node-llama-cpp counts them for offloading (`fileInsights.totalLayers`). */
  readonly totalLayers: number;
  /** The thread count to run the model with (the one asked for, or chooseThreads' pick). */
  readonly threads: number;
  /** Why that count, for the startup log. */
  readonly threadsReason: string;
}

/**
 * A model file that could not be loaded. The message carries the real reason: the validator's
 * finding, or the error lines llama.cpp logged, never just "Failed to load model".
 */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
  readonly code = 'model_load_failed' as const;
  readonly modelPath: string;
  /** The reason alone, without the path. */
  readonly reason: string;

  constructor(modelPath: string, reason: string, cause?: unknown) {
    super(`Cannot load model ${modelPath}: ${reason}`, cause === undefined ? undefined : { cause });
    this.modelPath = modelPath;
    this.reason = reason;
  }
}

/**
 * Validates a GGUF file and loads it on the backend `gpu` selects (selectLlamaDevice).
 *
 * The file is checked before llama.cpp sees it, because llama.cpp aborts the whole process on
 * some malformed files (a missing head count, a repeated token). Any GGUF gets the structural
 * checks (magic, version, counts, tensor table, data within the file); files Parley generated
 * also get the full `llama` shape checks. Real models of any architecture or quantization pass.
 *
 * The returned `llama` is shared by every model this module loads in the process. Dispose the
 * model when done with it; disposing `llama` as well (at shutdown) is fine, and a later call then
 * starts a fresh one.
 */
export async function loadLlamaModel(options: LoadLlamaModelOptions): Promise<LoadedLlamaModel> {
  const { modelPath, logger, build: choice = LlamaBuildChoice.prebuilt, gpu = GpuChoice.auto, gpuLayers = 'auto' } = options;
  const requested = options.threads;
  if (requested !== 'auto' && (!Number.isInteger(requested) || requested < 1)) throw new RangeError(`threads must be a positive integer or auto, got ${requested}`);
  await validateModelFile(modelPath);
  const modelBytes = (await stat(modelPath)).size;

  const { llama, build, reason: buildReason, device, deviceReason } = await sharedLlama(requested === 'auto' ? 1 : requested, choice, gpu);
  const lines: Array<{ level: LlamaLogLevel; message: string }> = [];
  const collect: LlamaLogger = (level, message) => { lines.push({ level, message }); };
  collectors.add(collect);
  if (logger !== undefined) addLogger(logger);
  try {
    // `auto` fits layers to the free VRAM after the contexts the engine will create, not just the weights.
    const layers = gpuLayers === 'auto' && options.fitContextTokens !== undefined ? { fitContext: { contextSize: options.fitContextTokens } } : gpuLayers;
    const model = await llama.loadModel({ modelPath, gpuLayers: layers });
    if (logger !== undefined) model.onDispose.createListener(() => removeLogger(logger));
    const { threads, reason: threadsReason } = requested === 'auto'
      ? chooseThreads({ build, mathCores: llama.cpuMathCores, modelBytes, gpuLayers: model.gpuLayers })
      : { threads: requested, reason: 'requested' };
    if (llama.maxThreads < threads) llama.maxThreads = threads;
    return { llama, model, build, buildReason, device, deviceReason, gpuLayers: model.gpuLayers, totalLayers: model.fileInsights.totalLayers, threads, threadsReason };
  } catch (error) {
    if (logger !== undefined) removeLogger(logger);
    await logsSettled(lines);
    throw new ModelLoadError(modelPath, failureReason(lines, error), error);
  } finally {
    collectors.delete(collect);
  }
}

async function validateModelFile(modelPath: string): Promise<void> {
  try {
    const file = await readGguf(modelPath, { checks: 'structure' });
    if (file.has(GENERATOR_KIND_KEY)) validateLlamaGguf(file);
  } catch (error) {
    throw modelFileError(modelPath, error);
  }
}

/** A failure to read or validate a model file, as a ModelLoadError that names the real reason. */
export function modelFileError(modelPath: string, error: unknown): ModelLoadError {
  if (error instanceof ModelLoadError) return error;
  if (error instanceof GgufValidationError) return new ModelLoadError(modelPath, error.message.replace(`${modelPath}: `, ''), error);
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new ModelLoadError(modelPath, 'the file does not exist', error);
  if (code === 'EISDIR') return new ModelLoadError(modelPath, 'the path is a directory, not a GGUF file', error);
  return new ModelLoadError(modelPath, (error as Error).message, error);
}

/** Loggers of live models, with the number of live models each one serves. */
const loggers = new Map<LlamaLogger, number>();

function addLogger(logger: LlamaLogger): void {
  loggers.set(logger, (loggers.get(logger) ?? 0) + 1);
}

function removeLogger(logger: LlamaLogger): void {
  const count = (loggers.get(logger) ?? 1) - 1;
  if (count > 0) loggers.set(logger, count);
  else loggers.delete(logger);
}

/** Load attempts in progress, which keep the lines that explain a failure. */
const collectors = new Set<LlamaLogger>();

/**
 * The single log sink of every Llama this module creates. llama.cpp's log callback is global to
 * the process, so lines cannot be told apart by instance; they go to every current listener.
 */
function dispatchLog(level: LlamaLogLevel, message: string): void {
  for (const collect of collectors) collect(level, message);
  if (loggers.size === 0) {
    Llama.defaultConsoleLogger(level, message);
    return;
  }
  for (const logger of loggers.keys()) {
    try {
      logger(level, message);
    } catch {
      // A logger must not break llama.cpp's callback.
    }
  }
}

interface SharedLlama {
  readonly llama: Llama;
  readonly build: LlamaBuild;
  readonly reason: string;
  readonly device: LlamaDevice;
  readonly deviceReason: string;
}

let current: SharedLlama | undefined;
let creating: Promise<SharedLlama> | undefined;
/** What the instance being created was asked for. */
let creatingChoice: LlamaBuildChoice | undefined;
let creatingGpu: GpuChoice | undefined;

/** Whether a live instance on `device` serves a load that asks for `gpu`. */
function deviceServes(device: LlamaDevice, gpu: GpuChoice): boolean {
  return gpu === GpuChoice.auto || device === (gpu === GpuChoice.off ? false : gpu);
}

/**
 * One Llama per process. Each `getLlama` call builds a new instance (about a second here, as it
 * test-runs the binary) and re-registers the process-wide native log callback; with
 * node-llama-cpp 3.21.1 the callback it replaces is finalized afterwards and switches native
 * logging off, so every second instance would lose llama.cpp's messages. Sharing one instance
 * avoids both costs. `auto` accepts whichever binary and backend run; an explicit choice must
 * match them.
 */
async function sharedLlama(threads: number, choice: LlamaBuildChoice, gpu: GpuChoice): Promise<SharedLlama> {
  if (creating !== undefined && choice !== LlamaBuildChoice.auto && creatingChoice !== choice) {
    throw new RangeError(`this process is already loading the ${creatingChoice} llama.cpp build; it cannot also load the ${choice} one`);
  }
  if (creating !== undefined && gpu !== GpuChoice.auto && creatingGpu !== gpu) {
    throw new RangeError(`this process is already loading llama.cpp with --gpu ${creatingGpu}; it cannot also load it with --gpu ${gpu}`);
  }
  const live = current !== undefined && !current.llama.disposed ? current : undefined;
  if (live !== undefined && creating === undefined) {
    if (choice !== LlamaBuildChoice.auto && live.build !== choice) {
      throw new RangeError(`this process already runs the ${live.build} llama.cpp build; it cannot also load the ${choice} one`);
    }
    if (!deviceServes(live.device, gpu)) {
      throw new RangeError(`this process already runs llama.cpp on ${live.device === false ? 'the CPU' : live.device}; it cannot also load it with --gpu ${gpu}`);
    }
    if (live.llama.maxThreads < threads) live.llama.maxThreads = threads;
    return live;
  }
  if (creating === undefined) {
    const previous = current?.llama;
    creatingChoice = choice;
    creatingGpu = gpu;
    creating = (async () => {
      // Release the disposed instance's native log callback first; see releaseNativeLogger.
      if (previous !== undefined) releaseNativeLogger(previous);
      // `build: 'never'`: node-llama-cpp only loads binaries already on disk (a local build, else
      // the prebuilt package for the backend), and never downloads or compiles one.
      const common = { build: 'never', maxThreads: threads, logLevel: LlamaLogLevel.warn, logger: dispatchLog } as const;
      const cpu = { ...common, gpu: false } as const;
      const selected = await selectLlamaDevice(gpu, {
        supported: () => getLlamaGpuTypes('supported'),
        valid: () => getLlamaGpuTypes('allValid'),
        gpu: async (backend) => {
          const llama = await getLlama({ ...common, gpu: backend, progressLogs: false });
          if (llama.gpu !== backend) {
            await llama.dispose();
            releaseNativeLogger(llama);
            throw new Error(`node-llama-cpp loaded its ${llama.gpu === false ? 'CPU' : llama.gpu} binary instead`);
          }
          return { build: LlamaBuild.prebuilt, llama, reason: `node-llama-cpp's ${backend} binary (${llama.buildType === 'localBuild' ? 'a local build' : 'prebuilt'}); the native build is CPU only` };
        },
        cpu: () => selectLlamaBuild(choice, {
          native: async () => {
            const llama = await getLlama({ ...cpu, cmakeOptions: { ...NATIVE_CMAKE_OPTIONS }, existingPrebuiltBinaryMustMatchBuildOptions: true, progressLogs: false });
            if (llama.buildType !== 'localBuild') {
              await llama.dispose();
              releaseNativeLogger(llama);
              throw new Error('node-llama-cpp offered its prebuilt binary');
            }
            return llama;
          },
          prebuilt: () => getLlama(cpu),
        }),
      }, choice === LlamaBuildChoice.native ? '--llama-build native is a CPU build' : undefined);
      current = { ...selected.llama, device: selected.device, deviceReason: selected.reason };
      return current;
    })().finally(() => { creating = undefined; creatingChoice = undefined; creatingGpu = undefined; });
  }
  const selected = await creating;
  if (selected.llama.maxThreads < threads) selected.llama.maxThreads = threads;
  return selected;
}

/**
 * Unregisters a disposed instance's native log callback before the next instance registers its
 * own. Its finalizer then runs while the next getLlama is still starting (the binary test takes
 * far longer than one event-loop turn), so it cannot switch off the new callback. Uses the
 * binding's `setLogger`, which node-llama-cpp does not expose; without it, the new instance may
 * log to the console instead of to the loggers.
 */
function releaseNativeLogger(llama: Llama): void {
  const bindings = (llama as unknown as { _bindings?: { setLogger?: (callback?: unknown) => void } })._bindings;
  try {
    bindings?.setLogger?.();
  } catch {
    // Best effort: the worst outcome is llama.cpp logging to the console.
  }
}

/**
 * llama.cpp's log lines reach JS through a queue, and may arrive after loadModel has rejected.
 * Waits briefly for the model loader's final line.
 */
async function logsSettled(lines: ReadonlyArray<{ message: string }>): Promise<void> {
  const deadline = Date.now() + 250;
  await new Promise((resolve) => setImmediate(resolve));
  while (!lines.some(({ message }) => /failed to load model/i.test(message)) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function failureReason(lines: ReadonlyArray<{ level: LlamaLogLevel; message: string }>, error: unknown): string {
  const errors = lines.filter(({ level }) => level === LlamaLogLevel.error || level === LlamaLogLevel.fatal);
  const serious = errors.length > 0 ? errors : lines.filter(({ level }) => level === LlamaLogLevel.warn);
  // The loader's generic last line adds nothing once a specific one is present.
  const specific = serious.filter(({ message }) => !/llama_model_load_from_file_impl: failed to load model/i.test(message));
  // llama.cpp may log the same line twice (the loader and its caller); keep each once.
  const chosen = [...new Set((specific.length > 0 ? specific : serious).map(({ message }) => message.trim()))];
  if (chosen.length > 0) return chosen.join('; ');
  return `${error instanceof Error ? error.message : String(error)} (llama.cpp logged no reason)`;
}
