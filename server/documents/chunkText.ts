/** Target length of a chunk in characters; a chunk passes it only by the line that would not split. */
export const CHUNK_CHARS = 1000;

/**
 * Cuts text into chunks of about CHUNK_CHARS at line ends (so paragraphs, log lines and rows stay
 * whole): lines are gathered until the next would pass the target, a blank line (a paragraph's
 * end) past half the target ends a chunk early, and a line longer than the target is cut at the
 * last white space before it (or hard at the target).
 *
 * Invariant: the chunks joined are exactly the text, so the document is its chunks and nothing
 * else needs keeping; the overlap between neighbours is added when they are indexed (ChunkIndex).
 */
export function chunkText(text: string, target = CHUNK_CHARS): string[] {
  const chunks: string[] = [];
  let current = '';
  const flush = () => {
    if (current !== '') chunks.push(current);
    current = '';
  };
  let start = 0;
  while (start < text.length) {
    const newline = text.indexOf('\n', start);
    const end = newline === -1 ? text.length : newline + 1;
    let line = text.slice(start, end);
    start = end;
    if (current.length + line.length > target) flush();
    while (line.length > target) {
      const space = line.lastIndexOf(' ', target);
      const cut = space > target / 2 ? space + 1 : target;
      chunks.push(line.slice(0, cut));
      line = line.slice(cut);
    }
    current += line;
    if (line.trim() === '' && current.length >= target / 2) flush();
  }
  flush();
  return chunks;
}

/** Characters of the previous chunk repeated before a chunk when indexed and quoted, from a line start where one is near. */
export const OVERLAP_CHARS = 150;

/** The end of `previous` to put before its successor: its last OVERLAP_CHARS, from the first line start among them when there is one. */
export function overlapOf(previous: string | undefined): string {
  if (previous === undefined) return '';
  const tail = previous.slice(-OVERLAP_CHARS);
  const lineStart = tail.indexOf('\n');
  return lineStart === -1 || lineStart === tail.length - 1 ? tail : tail.slice(lineStart + 1);
}
