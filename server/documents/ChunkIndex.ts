import Database from 'better-sqlite3';
import { overlapOf } from './chunkText.js';
import { ftsTerms, matchExpression } from './toFtsQuery.js';

/** One chunk of one document, as indexed and as quoted to the model (with its overlap). */
export interface IndexedChunk {
  readonly documentId: string;
  /** The chunk's index in its document, from 0. */
  readonly chunk: number;
  /** The chunk with the end of its predecessor before it. */
  readonly text: string;
}

export interface ChunkSource {
  readonly documentId: string;
  readonly chunks: readonly string[];
}

/**
 * A lexical index over documents' chunks: SQLite FTS5 (unicode61 tokenizer, BM25 ranking) in a
 * private in-memory database. Chunk text is encrypted at rest, and an FTS table on disk would
 * hold it in plain, so the index only ever lives in memory: built from decrypted chunks when a
 * conversation with documents is answered, kept in a small cache (Documents), and closed when
 * dropped.
 *
 * Each chunk is indexed with the end of the previous one (overlapOf), so a passage cut at a chunk
 * boundary is still found whole.
 */
export class ChunkIndex {
  private readonly db: Database.Database;
  private readonly search: Database.Statement<[string, number], { readonly rowid: number }>;
  private readonly documentCount: Database.Statement<[string], { readonly doc: number }>;
  private readonly chunks: IndexedChunk[] = [];
  private closed = false;

  constructor(sources: readonly ChunkSource[]) {
    this.db = new Database(':memory:');
    this.db.exec("CREATE VIRTUAL TABLE chunks USING fts5(text, tokenize = 'unicode61')");
    const insert = this.db.prepare<[number, string]>('INSERT INTO chunks (rowid, text) VALUES (?, ?)');
    this.db.transaction(() => {
      for (const source of sources) {
        source.chunks.forEach((chunk, index) => {
          const text = overlapOf(source.chunks[index - 1]) + chunk;
          this.chunks.push({ documentId: source.documentId, chunk: index, text });
          insert.run(this.chunks.length, text);
        });
      }
    })();
    // bm25() is lower for better matches: ascending order puts the best first.
    this.search = this.db.prepare('SELECT rowid FROM chunks WHERE chunks MATCH ? ORDER BY bm25(chunks) LIMIT ?');
    // How many chunks hold a term: words in most chunks ("the", a log's "INFO") rank nothing and cost most.
    this.db.exec("CREATE VIRTUAL TABLE terms USING fts5vocab(chunks, 'row')");
    this.documentCount = this.db.prepare('SELECT doc FROM terms WHERE term = ?');
  }

  get size(): number {
    return this.chunks.length;
  }

  /** The chunks that best match `message`, best first, at most `limit`; none when no word of it occurs. */
  query(message: string, limit: number): IndexedChunk[] {
    if (this.closed) throw new Error('the chunk index is closed');
    if (limit <= 0) return [];
    const terms = ftsTerms(message);
    // Words found in more than a quarter of the chunks are left out (when others remain): they
    // barely change BM25's order but make it score most of the index.
    const common = this.chunks.length / 4;
    const selective = this.chunks.length >= 8 ? terms.filter((term) => (this.documentCount.get(term)?.doc ?? 0) <= common) : terms;
    const match = matchExpression(selective.length > 0 ? selective : terms);
    if (match === undefined) return [];
    return this.search.all(match, limit).flatMap((row) => this.chunks[row.rowid - 1] ?? []);
  }

  /** The first chunks in document order: what a message with no matching words gets. */
  leading(limit: number): IndexedChunk[] {
    return this.chunks.slice(0, Math.max(0, limit));
  }

  /** Frees the database; safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
