import { fileTypeFromBuffer } from 'file-type';
import { ErrorCode } from '../../shared/errorCodes.js';
import { DocumentKind } from '../../shared/protocol.js';
import { ParleyError } from '../ParleyError.js';
import { extractPdfText, PdfReadError } from './extractPdfText.js';

export interface ReadDocument {
  readonly kind: DocumentKind;
  readonly text: string;
}

const PDF_MAGIC = Buffer.from('%PDF-', 'latin1');
const UTF8_BOM = '\uFEFF';

/**
 * Decides what an upload is by its content, never its name, and extracts its text:
 * - a PDF (it starts with `%PDF-`): its text layer, page by page, via unpdf (Mozilla's pdf.js);
 * - UTF-8 text (it decodes as UTF-8 and holds no NUL byte): text, Markdown, logs, CSV, JSON, code.
 * Anything else is refused with `document_unsupported` (415), naming what it looks like when
 * file-type recognises it (a PNG renamed notes.txt is still a PNG).
 * A text longer than `maxChars` is refused with `document_too_long` (413).
 */
export async function readDocument(bytes: Buffer, maxChars: number, options: { readonly pdfTimeoutMs?: number } = {}): Promise<ReadDocument> {
  if (bytes.length === 0) throw unsupported('The file is empty.');
  if (bytes.subarray(0, PDF_MAGIC.length).equals(PDF_MAGIC)) return checked({ kind: DocumentKind.pdf, text: await pdfText(bytes, options.pdfTimeoutMs) }, maxChars);
  const text = utf8Text(bytes);
  if (text !== undefined) return checked({ kind: DocumentKind.text, text }, maxChars);
  const type = await fileTypeFromBuffer(bytes).catch(() => undefined);
  const what = type === undefined ? 'a binary file' : `a ${type.ext.toUpperCase()} file (${type.mime})`;
  throw unsupported(`This is ${what}, not a document Parley reads: send a PDF or UTF-8 text (text, Markdown, logs, CSV, JSON, code).`);
}

/** The bytes as text when they are valid UTF-8 without NUL (binary formats have NULs early); else undefined. */
function utf8Text(bytes: Buffer): string | undefined {
  if (bytes.includes(0)) return undefined;
  try {
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
    return text.startsWith(UTF8_BOM) ? text.slice(1) : text;
  } catch {
    return undefined;
  }
}

async function pdfText(bytes: Buffer, timeoutMs: number | undefined): Promise<string> {
  let pages: string[];
  try {
    // In a worker thread, with a time and memory limit: a hostile PDF cannot stall the server.
    pages = await extractPdfText(new Uint8Array(bytes), timeoutMs);
  } catch (error) {
    if (error instanceof PdfReadError && /longer than/.test(error.message)) throw unsupported('This PDF took too long to read.', error);
    throw unsupported('This PDF could not be read (damaged, or protected by a password).', error);
  }
  const text = pages.map((page) => page.trim()).filter(Boolean).join('\n\n');
  if (text === '') throw unsupported('This PDF has no text layer (a scan?): Parley reads text, not images.');
  return text;
}

function checked(document: ReadDocument, maxChars: number): ReadDocument {
  if (document.text.length > maxChars) {
    throw new ParleyError(ErrorCode.documentTooLong, `The document's text is ${document.text.length} characters; the limit is ${maxChars}.`, { httpStatus: 413 });
  }
  return document;
}

function unsupported(message: string, cause?: unknown): ParleyError {
  return new ParleyError(ErrorCode.documentUnsupported, message, { httpStatus: 415, cause });
}
