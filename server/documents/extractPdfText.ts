import { Worker } from 'node:worker_threads';

/** How long one PDF may take to read before it is refused. */
export const PDF_TIMEOUT_MS = 30_000;
/** PDFs read at once; more wait their turn (each reader is a thread with its own heap). */
const MAX_CONCURRENT = 2;
/** Heap of one reader thread: a PDF that needs more is refused, the server unharmed. */
const WORKER_HEAP_MB = 256;

/**
 * The reader thread, as plain JavaScript (no loader needed): unpdf (Mozilla's pdf.js) is imported
 * from the URL the main thread resolved, so it is the same copy the server depends on.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  try {
    const { extractText, getDocumentProxy } = await import(workerData.unpdf);
    const pdf = await getDocumentProxy(new Uint8Array(workerData.bytes), { stopAtErrors: false });
    const { text } = await extractText(pdf, { mergePages: false });
    await pdf.loadingTask.destroy();
    parentPort.postMessage({ ok: true, pages: text });
  } catch (error) {
    parentPort.postMessage({ ok: false, message: String((error && error.message) || error) });
  }
})();
`;

export class PdfReadError extends Error {
  override name = 'PdfReadError';
}

let running = 0;
const waiting: Array<() => void> = [];

/**
 * The text of each page of a PDF, read by pdf.js in a worker thread: a PDF crafted to be slow or
 * huge to parse is stopped after `timeoutMs` or when it passes the thread's heap, and never holds
 * the server's event loop. At most MAX_CONCURRENT run at once. Rejects with PdfReadError.
 */
export async function extractPdfText(bytes: Uint8Array, timeoutMs = PDF_TIMEOUT_MS): Promise<string[]> {
  if (running >= MAX_CONCURRENT) await new Promise<void>((resolve) => waiting.push(resolve));
  running += 1;
  try {
    return await readInWorker(bytes, timeoutMs);
  } finally {
    running -= 1;
    waiting.shift()?.();
  }
}

function readInWorker(bytes: Uint8Array, timeoutMs: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { unpdf: import.meta.resolve('unpdf'), bytes },
      resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB },
      // The reader needs no environment and must not print to the server's terminal.
      env: {},
      stdout: true,
      stderr: true,
    });
    // pdf.js may warn on the console: read and drop it, so it never piles up.
    worker.stdout.resume();
    worker.stderr.resume();
    let settled = false;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void worker.terminate();
      outcome();
    };
    const timer = setTimeout(() => settle(() => reject(new PdfReadError(`reading took longer than ${timeoutMs} ms`))), timeoutMs);
    worker.on('message', (message: { ok: true; pages: string[] } | { ok: false; message: string }) => {
      settle(() => (message.ok ? resolve(message.pages) : reject(new PdfReadError(message.message))));
    });
    worker.on('error', (error) => settle(() => reject(new PdfReadError(error.message))));
    worker.on('exit', (code) => settle(() => reject(new PdfReadError(`the reader stopped (exit ${code})`))));
  });
}
