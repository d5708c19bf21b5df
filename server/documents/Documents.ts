import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ErrorCode } from '../../shared/errorCodes.js';
import type { AttachedDocument, DocumentSource } from '../../shared/protocol.js';
import type { Config } from '../config.js';
import { ParleyError } from '../ParleyError.js';
import { ChunkIndex, type IndexedChunk } from './ChunkIndex.js';
import { chunkText, overlapOf } from './chunkText.js';
import type { Embedder } from './Embedder.js';
import type { DocumentRepository, StoredDocument } from './DocumentRepository.js';
import { frameDocuments, type FramedPassage } from './frameDocuments.js';
import { readDocument } from './readDocument.js';
import { sanitiseFileName } from './sanitiseFileName.js';

export type DocumentsConfig = Pick<
  Config,
  'maxDocumentBytes' | 'maxDocumentsPerMessage' | 'maxDocumentsPerConversation' | 'maxDocumentStorageBytes' | 'maxDocumentChars'
>;

export interface DocumentsOptions {
  readonly logger?: Logger;
  /** Unsent uploads older than this are deleted by the sweep (default an hour). */
  readonly unattachedTtlMs?: number;
  /** How often the sweep runs (default a minute); 0: never (tests call sweep()). */
  readonly sweepEveryMs?: number;
  /** Conversations whose chunk index stays in memory (least recently used go first). */
  readonly cachedIndexes?: number;
  /**
   * `--embedding-model`: chunks get vectors (computed in the background after an upload, stored
   * encrypted), and retrieval fuses the chunks nearest to the message with the lexical ranking.
   */
  readonly embedder?: Embedder;
}

/** One way to put a conversation's documents into a prompt: the framed text and what it quotes. */
export interface PromptCandidate {
  readonly text: string;
  readonly sources: readonly DocumentSource[];
}

/**
 * A send's documents, checked and ready for planning: the prompt candidates in order of
 * preference (whole documents when they may fit, then fewer and fewer retrieved chunks).
 */
export interface DocumentContext {
  /** The documents this send attaches (not yet in the conversation). */
  readonly attaching: readonly StoredDocument[];
  /** Every document the send named (new ones and ones the conversation holds): its message's attachments. */
  readonly named: readonly StoredDocument[];
  /** The whole documents, framed: only offered when their text could fit in the context at all. */
  readonly whole: PromptCandidate | undefined;
  /** The best `limit` chunks for the message, framed (built on first call). */
  retrieve(limit: number): PromptCandidate;
}

const HOUR_MS = 3600 * 1000;
const DEFAULT_CACHED_INDEXES = 4;

/**
 * Documents in the chat: uploads (read, limited, chunked, stored encrypted), their attachment to
 * a conversation at send, and what a reply's prompt quotes from them. Lexical retrieval: an
 * in-memory FTS5 index per conversation (ChunkIndex), built from the decrypted chunks on first
 * need and cached for a few conversations; it is dropped when the conversation or a document
 * goes. Unsent uploads older than an hour are swept.
 *
 * Invariant: every refusal is a ParleyError with a document_* code and nothing half-stored.
 */
export class Documents {
  private readonly indexes = new Map<string, { readonly fingerprint: string; readonly ownerId: string; readonly index: ChunkIndex }>();
  private readonly sweepTimer: NodeJS.Timeout | undefined;
  private readonly unattachedTtlMs: number;
  private readonly cachedIndexes: number;
  /** Documents being embedded in the background. */
  private readonly embedding = new Set<Promise<void>>();
  private closed = false;

  constructor(
    readonly config: DocumentsConfig,
    readonly repository: DocumentRepository,
    private readonly options: DocumentsOptions = {},
  ) {
    this.unattachedTtlMs = options.unattachedTtlMs ?? HOUR_MS;
    this.cachedIndexes = options.cachedIndexes ?? DEFAULT_CACHED_INDEXES;
    const every = options.sweepEveryMs ?? 60_000;
    if (every > 0) {
      this.sweepTimer = setInterval(() => void this.sweep().catch((error: unknown) => options.logger?.error({ err: error }, 'sweeping unsent documents failed')), every);
      this.sweepTimer.unref();
    }
  }

  /**
   * Reads an upload (`bytes`, already within maxDocumentBytes), decides its kind by content,
   * extracts and chunks its text, and stores it unattached, within the owner's storage.
   */
  async ingest(ownerId: string, rawName: string, bytes: Buffer): Promise<StoredDocument> {
    if (bytes.length > this.config.maxDocumentBytes) throw tooLarge(this.config.maxDocumentBytes);
    const { kind, text } = await readDocument(bytes, this.config.maxDocumentChars);
    const document: StoredDocument = {
      id: `d_${randomBytes(16).toString('base64url')}`,
      ownerId,
      name: sanitiseFileName(rawName),
      size: bytes.length,
      kind,
      chars: text.length,
      createdAt: Date.now(),
      conversationId: undefined,
    };
    if (!(await this.repository.addDocument(document, chunkText(text), this.config.maxDocumentStorageBytes))) {
      throw new ParleyError(ErrorCode.documentLimit, `Your documents would take more than ${formatMiB(this.config.maxDocumentStorageBytes)}; delete some first.`, { httpStatus: 429 });
    }
    if (this.options.embedder) this.embedInBackground(this.options.embedder, document, chunkText(text));
    return document;
  }

  /** Resolves once every document uploaded so far has its vectors (or failed to get them). */
  async embeddingSettled(): Promise<void> {
    while (this.embedding.size > 0) await Promise.all([...this.embedding]);
  }

  /**
   * Embeds a stored document's chunks (as they are indexed: with their overlap) one at a time,
   * and stores the vectors in one write. Until then, and for a chunk that fails, retrieval is
   * lexical. A deleted document's vectors are simply not stored.
   */
  private embedInBackground(embedder: Embedder, document: StoredDocument, chunks: readonly string[]): void {
    const job = (async () => {
      const vectors: Array<Float32Array | undefined> = [];
      for (const [index, chunk] of chunks.entries()) {
        if (this.closed) return;
        vectors.push(await embedder.embed(overlapOf(chunks[index - 1]) + chunk).catch(() => undefined));
      }
      await this.repository.setEmbeddings(document.ownerId, document.id, embedder.id, vectors);
      // An index built meanwhile has no vectors for it: the next message builds one that has.
      for (const [conversationId, cached] of [...this.indexes]) if (cached.fingerprint.split(',').includes(document.id)) this.forgetConversation(conversationId);
    })()
      .catch((error: unknown) => this.options.logger?.error({ err: error, document: document.id }, 'embedding a document failed'))
      .finally(() => this.embedding.delete(job));
    this.embedding.add(job);
  }

  async get(ownerId: string, id: string): Promise<StoredDocument | undefined> {
    return this.repository.getDocument(ownerId, id);
  }

  async delete(ownerId: string, id: string): Promise<boolean> {
    const document = await this.repository.getDocument(ownerId, id);
    if (document === undefined) return false;
    const deleted = await this.repository.deleteDocument(ownerId, id);
    if (document.conversationId !== undefined) this.forgetConversation(document.conversationId);
    return deleted;
  }

  /**
   * Checks a send's documents and gathers the conversation's: undefined when there are none.
   * Refuses (ParleyError) more than maxDocumentsPerMessage, an id that is not the owner's upload
   * (unsent, or already in this conversation), and more than the conversation may hold.
   */
  async prepare(ownerId: string, conversationId: string | undefined, ids: readonly string[], message: string): Promise<DocumentContext | undefined> {
    const unique = [...new Set(ids)];
    if (unique.length > this.config.maxDocumentsPerMessage) throw perMessageLimit(this.config.maxDocumentsPerMessage);
    const held = conversationId === undefined ? [] : await this.repository.listDocuments(ownerId, conversationId);
    const attaching: StoredDocument[] = [];
    const named: StoredDocument[] = [];
    for (const id of unique) {
      const already = held.find((document) => document.id === id);
      if (already !== undefined) {
        named.push(already);
        continue;
      }
      const document = await this.repository.getDocument(ownerId, id);
      if (document === undefined || document.conversationId !== undefined) throw notFound(id);
      attaching.push(document);
      named.push(document);
    }
    if (held.length + attaching.length > this.config.maxDocumentsPerConversation) throw perConversationLimit(this.config.maxDocumentsPerConversation);
    const all = [...held, ...attaching];
    if (all.length === 0) return undefined;
    const tag = randomBytes(6).toString('hex');
    const chars = all.reduce((sum, document) => sum + document.chars, 0);
    const readAll = async () => Promise.all(all.map(async (document) => ({ document, chunks: await this.repository.readChunks(ownerId, document.id) })));
    // A whole-document prompt is only tried when the text could fit (about 3 characters a
    // token at best): counting the tokens of megabytes to learn they do not fit costs seconds.
    const whole = chars <= WHOLE_CHARS_LIMIT ? wholeCandidate(await readAll(), message, tag) : undefined;
    const index = await this.indexFor(ownerId, conversationId, all, whole === undefined ? undefined : readAll);
    // The message's vector for hybrid retrieval (one embedding, even when the documents end up whole).
    const vector = this.options.embedder === undefined ? undefined : await this.options.embedder.embed(message).catch(() => undefined);
    return {
      attaching,
      named,
      whole,
      retrieve: (limit) => retrievedCandidate(index, all, message, limit, tag, vector),
    };
  }

  /** The refusal of a send naming more documents than a message may carry (a check that costs nothing); else undefined. */
  countError(ids: readonly string[]): ParleyError | undefined {
    return new Set(ids).size > this.config.maxDocumentsPerMessage ? perMessageLimit(this.config.maxDocumentsPerMessage) : undefined;
  }

  /** Attaches the send's documents to the conversation (all or none), after prepare checked them. */
  async attach(ownerId: string, conversationId: string, documents: readonly StoredDocument[]): Promise<void> {
    if (documents.length === 0) return;
    const result = await this.repository.attachDocuments(ownerId, conversationId, documents.map((document) => document.id), this.config.maxDocumentsPerConversation);
    if (!result.ok) throw result.reason === 'limit' ? perConversationLimit(this.config.maxDocumentsPerConversation) : notFound(documents[0]?.id ?? '');
    this.forgetConversation(conversationId);
  }

  /** Notes on the user message which documents it sent. */
  async noteAttachments(ownerId: string, conversationId: string, messageId: string, documents: readonly StoredDocument[]): Promise<void> {
    if (documents.length === 0) return;
    const attached: AttachedDocument[] = documents.map(({ id, name, size, kind }) => ({ id, name, size, kind }));
    await this.repository.setMessageDocuments(ownerId, conversationId, messageId, { documents: attached });
  }

  /** Notes on the reply which passages its prompt quoted. */
  async noteSources(ownerId: string, conversationId: string, messageId: string, sources: readonly DocumentSource[]): Promise<void> {
    if (sources.length === 0) return;
    await this.repository.setMessageDocuments(ownerId, conversationId, messageId, { sources: [...sources] });
  }

  /** Drops the conversation's cached index (its documents changed or it was deleted). */
  forgetConversation(conversationId: string): void {
    const cached = this.indexes.get(conversationId);
    if (cached === undefined) return;
    cached.index.close();
    this.indexes.delete(conversationId);
  }

  /** Drops every cached index of the owner (delete-all). */
  forgetOwner(ownerId: string): void {
    for (const [conversationId, cached] of [...this.indexes]) if (cached.ownerId === ownerId) this.forgetConversation(conversationId);
  }

  /** Deletes unsent uploads older than the TTL; resolves with how many. */
  async sweep(now = Date.now()): Promise<number> {
    const swept = await this.repository.purgeUnattached(now - this.unattachedTtlMs);
    if (swept > 0) this.options.logger?.info({ swept }, 'unsent documents deleted');
    return swept;
  }

  /** Stops the sweep and frees the cached indexes; safe to call twice. */
  close(): void {
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const conversationId of [...this.indexes.keys()]) this.forgetConversation(conversationId);
  }

  /**
   * The conversation's chunk index over `documents`, from the cache when it covers the same
   * documents, else built (the least recently used entry makes room). A new conversation's
   * index is not cached: it has no id yet.
   */
  private async indexFor(
    ownerId: string,
    conversationId: string | undefined,
    documents: readonly StoredDocument[],
    readAll: (() => Promise<Array<{ document: StoredDocument; chunks: string[] }>>) | undefined,
  ): Promise<() => ChunkIndex> {
    const fingerprint = documents.map((document) => document.id).sort().join(',');
    const cached = conversationId === undefined ? undefined : this.indexes.get(conversationId);
    if (cached !== undefined && cached.fingerprint === fingerprint && conversationId !== undefined) {
      // Refresh its place in the LRU order.
      this.indexes.delete(conversationId);
      this.indexes.set(conversationId, cached);
      return () => cached.index;
    }
    const loaded = await (readAll ?? (async () => Promise.all(documents.map(async (document) => ({ document, chunks: await this.repository.readChunks(ownerId, document.id) })))))();
    const embedder = this.options.embedder;
    const vectors = embedder === undefined ? [] : await Promise.all(documents.map((document) => this.repository.readEmbeddings(ownerId, document.id, embedder.id)));
    let built: ChunkIndex | undefined;
    return () => {
      if (built !== undefined) return built;
      built = new ChunkIndex(loaded.map(({ document, chunks }, position) => ({ documentId: document.id, chunks, ...(vectors[position] === undefined ? {} : { vectors: vectors[position] }) })));
      if (conversationId !== undefined) {
        this.forgetConversation(conversationId);
        this.indexes.set(conversationId, { fingerprint, ownerId, index: built });
        while (this.indexes.size > this.cachedIndexes) {
          const oldest = this.indexes.keys().next().value;
          if (oldest === undefined) break;
          this.forgetConversation(oldest);
        }
      }
      return built;
    };
  }
}

/** Whole documents are offered to the planner up to this many characters in all. */
export const WHOLE_CHARS_LIMIT = 64_000;

function wholeCandidate(loaded: ReadonlyArray<{ document: StoredDocument; chunks: readonly string[] }>, message: string, tag: string): PromptCandidate {
  const passages: FramedPassage[] = loaded.map(({ document, chunks }) => ({ name: document.name, text: chunks.join('') }));
  const sources = loaded.flatMap(({ document, chunks }) => chunks.map((_, chunk) => ({ documentId: document.id, name: document.name, chunk })));
  return { text: frameDocuments(passages, message, tag), sources };
}

function retrievedCandidate(index: () => ChunkIndex, documents: readonly StoredDocument[], message: string, limit: number, tag: string, vector: Float32Array | undefined): PromptCandidate {
  const chunkIndex = index();
  let found: IndexedChunk[] = chunkIndex.query(message, limit, vector);
  // No word of the message occurs in the documents ("summarise this"): their beginning.
  if (found.length === 0) found = chunkIndex.leading(limit);
  const order = new Map(documents.map((document, position) => [document.id, position]));
  const names = new Map(documents.map((document) => [document.id, document.name]));
  // Quoted in reading order: a document's passages in sequence read better than by rank.
  const sorted = [...found].sort((a, b) => (order.get(a.documentId) ?? 0) - (order.get(b.documentId) ?? 0) || a.chunk - b.chunk);
  const passages = sorted.map((chunk) => ({ name: names.get(chunk.documentId) ?? 'document', part: chunk.chunk, text: chunk.text }));
  const sources = sorted.map((chunk) => ({ documentId: chunk.documentId, name: names.get(chunk.documentId) ?? 'document', chunk: chunk.chunk }));
  return { text: frameDocuments(passages, message, tag), sources };
}

export function tooLarge(maxBytes: number): ParleyError {
  return new ParleyError(ErrorCode.documentTooLarge, `Documents are at most ${formatMiB(maxBytes)}.`, { httpStatus: 413 });
}

function notFound(id: string): ParleyError {
  return new ParleyError(ErrorCode.documentNotFound, `No such document: ${id.slice(0, 64)} (unknown, deleted, or sent in another conversation).`, { httpStatus: 404 });
}

function perMessageLimit(max: number): ParleyError {
  return new ParleyError(ErrorCode.documentLimit, `A message can carry at most ${max} documents.`, { httpStatus: 409 });
}

function perConversationLimit(max: number): ParleyError {
  return new ParleyError(ErrorCode.documentLimit, `A conversation can hold at most ${max} documents.`, { httpStatus: 409 });
}

function formatMiB(bytes: number): string {
  const mib = bytes / (1024 * 1024);
  return mib >= 1 ? `${Number.isInteger(mib) ? mib : mib.toFixed(1)} MiB` : `${Math.round(bytes / 1024)} KiB`;
}
