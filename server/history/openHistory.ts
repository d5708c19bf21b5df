import type { Logger } from 'pino';
import { redactUrl } from '../cluster/redactUrl.js';
import type { Config } from '../config.js';
import type { DocumentRepository } from '../documents/DocumentRepository.js';
import { MemoryDocumentRepository } from '../documents/MemoryDocumentRepository.js';
import { PostgresDocumentRepository } from '../documents/PostgresDocumentRepository.js';
import { SqliteDocumentRepository } from '../documents/SqliteDocumentRepository.js';
import type { ConversationRepository } from './ConversationRepository.js';
import { HistoryCipher } from './HistoryCipher.js';
import { loadOrCreateHistoryKey } from './loadOrCreateHistoryKey.js';
import { MemoryConversationRepository } from './MemoryConversationRepository.js';
import { PostgresConversationRepository } from './PostgresConversationRepository.js';
import { SqliteConversationRepository } from './SqliteConversationRepository.js';

export interface OpenedHistory {
  readonly repository: ConversationRepository;
  /** Uploaded documents, in the same store (deleted with their conversations). */
  readonly documents: DocumentRepository;
  /** Stops the purge timer and closes the store. */
  close(): Promise<void>;
}

const DAY_MS = 24 * 3600 * 1000;
/** How often idle conversations are purged while the server runs. */
const PURGE_EVERY_MS = 3600 * 1000;

/**
 * Opens the history store the config asks for: the encrypted SQLite file in the data dir, the
 * encrypted PostgreSQL database that `--database` names (shared by the gateways of a cluster,
 * each given the same history key), or memory only (`--history off`). Replies a crash left
 * streaming are marked interrupted (on PostgreSQL only those no running gateway is still
 * writing: see PostgresConversationRepository), and with historyDays, conversations idle for
 * longer are deleted now and every hour. A database that cannot be reached fails the start.
 */
export async function openHistory(config: Pick<Config, 'history' | 'historyDays' | 'historyKeyFile' | 'dataDir' | 'database'>, logger: Logger): Promise<OpenedHistory> {
  let repository: ConversationRepository;
  let documents: DocumentRepository;
  if (config.history === 'off') {
    const memory = new MemoryConversationRepository();
    repository = memory;
    documents = new MemoryDocumentRepository(memory);
  } else {
    const key = await loadOrCreateHistoryKey({ dataDir: config.dataDir, ...(config.historyKeyFile === undefined ? {} : { keyFile: config.historyKeyFile }) });
    const cipher = new HistoryCipher(key);
    if (config.database === undefined) {
      const sqlite = new SqliteConversationRepository({ directory: config.dataDir, cipher });
      repository = sqlite;
      documents = new SqliteDocumentRepository(sqlite, cipher);
    } else {
      const postgres = new PostgresConversationRepository({ url: config.database, cipher, logger });
      repository = postgres;
      documents = new PostgresDocumentRepository(postgres, cipher);
    }
  }
  await repository.open();
  let timer: NodeJS.Timeout | undefined;
  try {
    const interrupted = await repository.markInterrupted();
    if (interrupted > 0) logger.warn({ interrupted }, 'replies cut off by the last stop are kept as interrupted');
    if (config.historyDays > 0) {
      const purge = async () => {
        const purged = await repository.purgeIdle(Date.now() - config.historyDays * DAY_MS);
        if (purged > 0) logger.info({ purged, historyDays: config.historyDays }, 'idle conversations deleted');
      };
      await purge();
      timer = setInterval(() => void purge().catch((error: unknown) => logger.error({ err: error }, 'purging idle conversations failed')), PURGE_EVERY_MS);
      timer.unref();
    }
  } catch (error) {
    // An open pool would keep the process alive after the failed start.
    await repository.close();
    throw error;
  }
  logger.info({ history: config.history, historyDays: config.historyDays }, describeStore(config));
  return {
    repository,
    documents,
    async close() {
      clearInterval(timer);
      await repository.close();
    },
  };
}

function describeStore(config: Pick<Config, 'history' | 'database'>): string {
  if (config.history === 'off') return 'history: memory only';
  if (config.database !== undefined) return `history: encrypted PostgreSQL at ${redactUrl(config.database)}`;
  return 'history: encrypted SQLite in the data dir';
}
