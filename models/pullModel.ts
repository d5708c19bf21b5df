import { mkdir, rm, stat, truncate } from 'node:fs/promises';
import { createModelDownloader } from 'node-llama-cpp';
import type { ModelDownloader } from 'node-llama-cpp';
import { GgufValidationError } from './gguf/GgufValidationError.js';
import { readGguf } from './gguf/readGguf.js';
import { ModelPullError, ModelPullErrorCode } from './ModelPullError.js';

export interface PullModelOptions {
  /** Directory the model is saved in; created when missing. */
  dir: string;
  /** Draw node-llama-cpp's progress bar on the terminal. */
  showProgress?: boolean;
  /** Extra request headers, for example `Authorization` for a private server. */
  headers?: Record<string, string>;
  /** Give up when no byte arrives for this long, including while connecting. Default 60 s. */
  stallTimeoutMs?: number;
  /** Cancels the download; the partial file is deleted. */
  signal?: AbortSignal;
}

const DEFAULT_STALL_TIMEOUT_MS = 60_000;
const PREFLIGHT_TIMEOUT_MS = 15_000;
const HUGGING_FACE_ORIGIN = 'https://huggingface.co/';

/**
 * Downloads a GGUF model into `dir` with node-llama-cpp's own downloader (ipull: parallel
 * connections, resumable, split files joined). `uri` is an http(s) URL or a Hugging Face URI
 * (`hf:<user>/<repo>:<quant>` or `hf:<user>/<repo>/<file>`). A file already present with the
 * remote size is kept. The result is checked as a GGUF header before it is returned; a file that
 * fails the check is deleted. Throws ModelPullError.
 */
export async function pullModel(uri: string, options: PullModelOptions): Promise<{ path: string }> {
  if (!/^(https?:\/\/|hf:)/i.test(uri)) {
    throw new ModelPullError(ModelPullErrorCode.invalidUri, uri, `Cannot pull ${uri}: use an http(s):// URL or an hf:<user>/<repo> URI`);
  }
  await mkdir(options.dir, { recursive: true });
  await preflight(uri, options.headers);
  const stallTimeoutMs = options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
  const controller = new AbortController();
  const abortFromCaller = (): void => controller.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', abortFromCaller, { once: true });
  let lastProgressAt = Date.now();
  let downloaded = -1;
  let stalled = false;
  // ipull retries network failures for minutes; the watchdog turns a silent stall into an error.
  const stalledPromise = new Promise<never>((_, reject) => {
    const timer = setInterval(() => {
      if (Date.now() - lastProgressAt < stallTimeoutMs) return;
      stalled = true;
      clearInterval(timer);
      controller.abort();
      reject(new ModelPullError(ModelPullErrorCode.network, uri, `Cannot pull ${uri}: no data received for ${Math.round(stallTimeoutMs / 1000)} s`));
    }, Math.min(1000, stallTimeoutMs));
    controller.signal.addEventListener('abort', () => clearInterval(timer), { once: true });
  });
  stalledPromise.catch(() => undefined);
  let path: string;
  let downloader: ModelDownloader | undefined;
  try {
    const downloading = (async () => {
      downloader = await createModelDownloader({
        modelUri: uri,
        dirPath: options.dir,
        showCliProgress: options.showProgress ?? false,
        ...(options.headers === undefined ? {} : { headers: options.headers }),
        skipExisting: true,
        deleteTempFileOnCancel: true,
        onProgress: ({ downloadedSize }) => {
          if (downloadedSize > downloaded) {
            downloaded = downloadedSize;
            lastProgressAt = Date.now();
          }
        },
      });
      if (controller.signal.aborted) {
        await downloader.cancel({ deleteTempFile: true });
        throw controller.signal.reason;
      }
      return downloader.download({ signal: controller.signal });
    })();
    path = await Promise.race([downloading, stalledPromise]);
    if (controller.signal.aborted) throw controller.signal.reason ?? new Error('aborted');
    if (downloader !== undefined) await trimToServedSize(uri, downloader);
  } catch (error) {
    if (error instanceof ModelPullError) throw error;
    if (options.signal?.aborted === true && !stalled) {
      throw new ModelPullError(ModelPullErrorCode.cancelled, uri, `Pull of ${uri} was cancelled`, { cause: error });
    }
    throw classify(uri, error);
  } finally {
    controller.abort();
    options.signal?.removeEventListener('abort', abortFromCaller);
  }
  try {
    await readGguf(path, { checks: 'structure' });
  } catch (error) {
    await rm(path, { force: true });
    const reason = error instanceof GgufValidationError ? error.message.replace(`${path}: `, '') : String(error);
    throw new ModelPullError(ModelPullErrorCode.notGguf, uri, `Pulled ${uri} but it is not a usable GGUF model (${reason}); the file was deleted`, { cause: error });
  }
  return { path };
}

/**
 * Makes each downloaded file exactly the size the server announced. ipull (3.9.5, under
 * node-llama-cpp 3.22.1) keeps a JSON progress record after the data while it downloads and
 * truncates it away at the end without waiting for the last record's write; on a busy machine that
 * write lands after the truncate and the record stays at the end of the model. The downloader has
 * closed its file by now, so nothing writes to it any more. A file shorter than announced is an
 * error, never padded.
 */
async function trimToServedSize(uri: string, downloader: ModelDownloader): Promise<void> {
  for (const { filePath, totalSize } of downloader.filesInfo) {
    if (totalSize <= 0) continue; // the server sent no length: there is nothing to compare with
    const { size } = await stat(filePath);
    if (size > totalSize) {
      await truncate(filePath, totalSize);
    } else if (size < totalSize) {
      await rm(filePath, { force: true });
      throw new ModelPullError(ModelPullErrorCode.failed, uri, `Cannot pull ${uri}: the download ended at ${size} of ${totalSize} bytes; the partial file was deleted`);
    }
  }
}

/**
 * Fails fast when the server cannot be reached at all. The downloader would retry a refused or
 * unresolvable host for minutes without a word. Only a network failure counts: some servers
 * refuse HEAD yet serve GET, so the status is left to the downloader.
 */
async function preflight(uri: string, headers: Record<string, string> | undefined): Promise<void> {
  const target = /^hf:/i.test(uri) ? HUGGING_FACE_ORIGIN : uri;
  try {
    const response = await fetch(target, {
      method: 'HEAD',
      redirect: 'manual',
      signal: AbortSignal.timeout(PREFLIGHT_TIMEOUT_MS),
      ...(headers === undefined || target !== uri ? {} : { headers }),
    });
    await response.body?.cancel();
  } catch (error) {
    const cause = (error as { cause?: unknown }).cause;
    const detail = findCode(error) ?? (cause instanceof Error ? cause.message : error instanceof Error ? error.message : String(error));
    throw new ModelPullError(ModelPullErrorCode.network, uri, `Cannot pull ${uri}: cannot reach ${new URL(target).host} (${detail})`, { cause: error });
  }
}

/** Maps the downloader's errors (ipull's fetch errors, node-llama-cpp's URI errors) onto ModelPullError codes. */
function classify(uri: string, error: unknown): ModelPullError {
  const message = error instanceof Error ? error.message : String(error);
  const status = findStatus(error);
  if (status !== undefined) {
    return new ModelPullError(ModelPullErrorCode.http, uri, `Cannot pull ${uri}: the server answered HTTP ${status} (${message})`, { status, cause: error });
  }
  const code = findCode(error);
  if (code !== undefined && /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|UND_ERR_\w+)$/.test(code)) {
    return new ModelPullError(ModelPullErrorCode.network, uri, `Cannot pull ${uri}: network error ${code} (${message})`, { cause: error });
  }
  if (/fetch failed|network|socket/i.test(message)) {
    return new ModelPullError(ModelPullErrorCode.network, uri, `Cannot pull ${uri}: network error (${message})`, { cause: error });
  }
  if (/invalid|unsupported|uri|url/i.test(message)) {
    return new ModelPullError(ModelPullErrorCode.invalidUri, uri, `Cannot pull ${uri}: ${message}`, { cause: error });
  }
  return new ModelPullError(ModelPullErrorCode.failed, uri, `Cannot pull ${uri}: ${message}`, { cause: error });
}

/** An HTTP status on the error or its causes, as ipull and fetch report it. */
function findStatus(error: unknown): number | undefined {
  for (let current = error, depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
    const candidate = current as { statusCode?: unknown; status?: unknown; message?: unknown; cause?: unknown };
    for (const value of [candidate.statusCode, candidate.status]) {
      if (typeof value === 'number' && value >= 400 && value < 600) return value;
    }
    const match = typeof candidate.message === 'string' ? /\b(?:status(?: code)?|HTTP)[:\s]+([45]\d\d)\b/i.exec(candidate.message) : null;
    if (match !== null) return Number(match[1]);
    current = candidate.cause;
  }
  return undefined;
}

function findCode(error: unknown): string | undefined {
  for (let current = error, depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
    const { code, cause, errors } = current as { code?: unknown; cause?: unknown; errors?: unknown };
    if (typeof code === 'string') return code;
    // Node's fetch reports a refused dual-stack connection as an AggregateError of attempts.
    current = cause ?? (Array.isArray(errors) ? errors[0] : undefined);
  }
  return undefined;
}
