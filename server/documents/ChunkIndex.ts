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
  /** The chunks' vectors (`--embedding-model`), in chunk order; a chunk without one is found lexically only. */
  readonly vectors?: ReadonlyArray<Float32Array | undefined>;
}

/** Reciprocal rank fusion's constant (Cormack et al., 2009): a rank r adds 1 / (RRF_K + r). */
export const RRF_K = 60;
/** Candidates each ranking contributes to the fusion. */
const FUSION_DEPTH = 50;

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
  /** Unit-length vectors by chunk (rowid - 1), when the sources have them. */
  private readonly vectors: Array<Float32Array | undefined> = [];
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
          const vector = source.vectors?.[index];
          this.vectors.push(vector === undefined ? undefined : normalised(vector));
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

  /** Whether any chunk has a vector (then `query` can fuse a semantic ranking in). */
  get hasVectors(): boolean {
    return this.vectors.some((vector) => vector !== undefined);
  }

  /**
   * The chunks that best match `message`, best first, at most `limit`. Lexical (BM25) alone, or,
   * given the message's vector, fused with the chunks nearest to it (cosine similarity) by
   * reciprocal rank fusion: each chunk scores the sum of 1 / (RRF_K + its rank) in each ranking.
   * None when no word of the message occurs and there is no vector.
   */
  query(message: string, limit: number, vector?: Float32Array): IndexedChunk[] {
    if (this.closed) throw new Error('the chunk index is closed');
    if (limit <= 0) return [];
    if (vector === undefined || !this.hasVectors) return this.lexical(message, limit).map((row) => this.chunks[row] as IndexedChunk);
    const scores = new Map<number, number>();
    const add = (rows: readonly number[]) => rows.forEach((row, rank) => scores.set(row, (scores.get(row) ?? 0) + 1 / (RRF_K + rank + 1)));
    add(this.lexical(message, Math.max(FUSION_DEPTH, limit)));
    add(this.nearest(vector, Math.max(FUSION_DEPTH, limit)));
    return [...scores.entries()]
      .sort((a, b) => b[1] - a[1] || a[0] - b[0])
      .slice(0, limit)
      .map(([row]) => this.chunks[row] as IndexedChunk);
  }

  /** Chunk positions by BM25, best first. */
  private lexical(message: string, limit: number): number[] {
    const terms = ftsTerms(message);
    // Words found in more than a quarter of the chunks are left out (when others remain): they
    // barely change BM25's order but make it score most of the index.
    const common = this.chunks.length / 4;
    const selective = this.chunks.length >= 8 ? terms.filter((term) => (this.documentCount.get(term)?.doc ?? 0) <= common) : terms;
    const match = matchExpression(selective.length > 0 ? selective : terms);
    if (match === undefined) return [];
    return this.search.all(match, limit).map((row) => row.rowid - 1);
  }

  /** Chunk positions by cosine similarity to `vector`, nearest first (chunks without a vector left out). */
  private nearest(vector: Float32Array, limit: number): number[] {
    const query = normalised(vector);
    const scored: Array<[number, number]> = [];
    this.vectors.forEach((candidate, row) => {
      if (candidate === undefined || candidate.length !== query.length) return;
      let dot = 0;
      for (let index = 0; index < query.length; index++) dot += (query[index] ?? 0) * (candidate[index] ?? 0);
      scored.push([row, dot]);
    });
    return scored
      .sort((a, b) => b[1] - a[1] || a[0] - b[0])
      .slice(0, limit)
      .map(([row]) => row);
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

/** `vector` scaled to length 1 (a zero vector stays zero), so a dot product is the cosine. */
function normalised(vector: Float32Array): Float32Array {
  let norm = 0;
  for (const value of vector) norm += value * value;
  norm = Math.sqrt(norm);
  return norm === 0 ? Float32Array.from(vector) : vector.map((value) => value / norm);
}
