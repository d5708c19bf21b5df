import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ChunkIndex } from '../server/documents/ChunkIndex.js';
import { Documents } from '../server/documents/Documents.js';
import { SqliteDocumentRepository } from '../server/documents/SqliteDocumentRepository.js';
import { HistoryCipher } from '../server/history/HistoryCipher.js';
import { SqliteConversationRepository } from '../server/history/SqliteConversationRepository.js';
import { defaults } from '../server/config.js';
import { generatedLog } from '../test/helpers/minimalPdf.js';
import type { Benchmark } from './Benchmark.js';
import { cell } from './renderTable.js';
import { summarize } from './summarize.js';

const INGEST_BYTES = 10 * 1000 * 1000;
const INDEX_CHUNKS = 10_000;
const VECTOR_DIMENSIONS = 384;

/**
 * Documents in the chat, in process: ingesting a 10 MB generated log (UTF-8 check, chunking,
 * encrypting and storing every chunk in the SQLite history store), and lexical retrieval over
 * 10,000 chunks (building the in-memory FTS5 index from decrypted chunks, then one BM25 query
 * per message, best 8).
 */
export const documents: Benchmark = {
  name: 'documents',
  summary: 'documents: ingesting a 10 MB log, and retrieval latency (FTS5, BM25) over 10,000 chunks',
  async run(context) {
    const runs = context.quick ? 1 : 3;
    const queries = context.quick ? 200 : 1000;
    const dir = await mkdtemp(join(tmpdir(), 'parley-bench-documents-'));
    const cipher = new HistoryCipher(randomBytes(32));
    const history = new SqliteConversationRepository({ directory: dir, cipher });
    await history.open();
    const service = new Documents(defaults, new SqliteDocumentRepository(history, cipher), { sweepEveryMs: 0 });
    try {
      // A log of 10 MB (generated lines average under 100 bytes), cut at a line end.
      let log = generatedLog(Math.ceil(INGEST_BYTES / 90));
      log = log.slice(0, log.lastIndexOf('\n', INGEST_BYTES) + 1);
      const bytes = Buffer.from(log);
      context.progress(`documents: ingesting ${(bytes.length / 1e6).toFixed(1)} MB ${runs} times`);
      const ingestMs: number[] = [];
      let chunks = 0;
      for (let run = 0; run < runs; run++) {
        const started = performance.now();
        const stored = await service.ingest(`owner-${run}`, 'server.log', bytes);
        ingestMs.push(performance.now() - started);
        chunks = (await service.repository.readChunks(`owner-${run}`, stored.id)).length;
      }

      // Retrieval: 10,000 chunks of generated log, each holding one planted word to ask for.
      const source: string[] = [];
      const lines = generatedLog(INDEX_CHUNKS * 9).split('\n');
      for (let chunk = 0; chunk < INDEX_CHUNKS; chunk++) source.push(`${lines.slice(chunk * 9, chunk * 9 + 9).join('\n')} planted${chunk}\n`);
      const built = performance.now();
      const index = new ChunkIndex([{ documentId: 'd', chunks: source }]);
      const buildMs = performance.now() - built;
      context.progress(`documents: ${queries} queries over ${index.size} chunks`);
      const latencies: number[] = [];
      let hits = 0;
      for (let query = -20; query < queries; query++) {
        const target = (Math.abs(query) * 7919) % INDEX_CHUNKS;
        const started = performance.now();
        const found = index.query(`What does the log say about worker retry planted${target} and the cache miss?`, 8);
        if (query < 0) continue;
        latencies.push(performance.now() - started);
        if (found.some((chunk) => chunk.chunk === target)) hits++;
      }
      index.close();

      // Hybrid: the same chunks with 384-dimension vectors (the size of small embedding models;
      // random, as only the cost is measured), fused with the lexical ranking by RRF.
      let seed = 7;
      const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) - 0.5;
      const vectorOf = () => Float32Array.from({ length: VECTOR_DIMENSIONS }, random);
      const hybrid = new ChunkIndex([{ documentId: 'd', chunks: source, vectors: source.map(vectorOf) }]);
      const fused: number[] = [];
      let fusedHits = 0;
      for (let query = -20; query < queries; query++) {
        const target = (Math.abs(query) * 7919) % INDEX_CHUNKS;
        const vector = vectorOf();
        const started = performance.now();
        const found = hybrid.query(`What does the log say about worker retry planted${target} and the cache miss?`, 8, vector);
        if (query < 0) continue;
        fused.push(performance.now() - started);
        if (found.some((chunk) => chunk.chunk === target)) fusedHits++;
      }
      hybrid.close();
      const fusedLatency = summarize(fused);
      const latency = summarize(latencies);
      const ingest = summarize(ingestMs);
      return {
        tables: [
          {
            title: 'Documents: ingest and retrieval (in process)',
            rows: [
              ['measure', 'p50', 'p99', 'notes'],
              ['ingest a 10 MB log (ms)', cell(ingest.p50, 0), cell(ingest.max, 0), `${runs} runs; ${chunks} chunks of ~1,000 characters, each encrypted and stored; p99 column: the slowest run`],
              [`build the FTS5 index over ${INDEX_CHUNKS.toLocaleString('en')} chunks (ms)`, cell(buildMs, 0), '', 'once per conversation, then cached (the 4 most recent)'],
              [`retrieve the best 8 of ${INDEX_CHUNKS.toLocaleString('en')} chunks (ms)`, cell(latency.p50, 2), cell(latency.p99, 2), `${queries} queries; the chunk asked for was among the 8 in ${hits} of ${queries}`],
              [`hybrid: the same, fused with ${VECTOR_DIMENSIONS}-d vectors by RRF (ms)`, cell(fusedLatency.p50, 2), cell(fusedLatency.p99, 2), `without the query's embedding (one call to the model); asked-for chunk among the 8 in ${fusedHits} of ${queries}`],
            ],
            notes: ['A 10 MB file is the default --max-document-bytes; its text, 10,000,000 characters, is under the default --max-document-chars (12,000,000).'],
          },
        ],
        data: { ingestMs: ingest, chunks, buildMs, retrievalMs: latency, queries, hits, hybridRetrievalMs: fusedLatency, hybridHits: fusedHits },
      };
    } finally {
      service.close();
      await history.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
};
