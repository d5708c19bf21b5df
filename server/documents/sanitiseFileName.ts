/** Longest display name kept, in characters (code points). */
export const MAX_DOCUMENT_NAME_CHARS = 200;

/**
 * A file name fit to show: the last path segment only (a name is never used as a path), NFC,
 * without control characters (C0, C1), bidi overrides and isolates (which can make `gpj.exe`
 * read as `exe.jpg`), zero-width and other invisible format characters, with runs of white
 * space made one space, trimmed and capped at MAX_DOCUMENT_NAME_CHARS. Empty: `document`.
 */
export function sanitiseFileName(raw: string): string {
  const lastSegment = raw.split(/[/\\]/).at(-1) ?? '';
  const cleaned = lastSegment
    .normalize('NFC')
    // White space of any kind (tabs, line breaks, line and paragraph separators) becomes one space.
    .replace(/\s+/gu, ' ')
    // Cc: controls; Cf: format characters (bidi embeddings, overrides and isolates, marks, zero-width).
    .replace(/[\p{Cc}\p{Cf}]/gu, '')
    .trim();
  const capped = [...cleaned].slice(0, MAX_DOCUMENT_NAME_CHARS).join('').trim();
  // A name of dots only would read as a directory.
  return capped === '' || /^\.+$/.test(capped) ? 'document' : capped;
}
