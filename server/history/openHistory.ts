import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { DocumentRepository } from '../documents/DocumentRepository.js';
import { MemoryDocumentRepository } from '../documents/MemoryDocumentRepository.js';
import { SqliteDocumentRepository } from '../documents/SqliteDocumentRepository.js';
import type { ConversationRepository } from './ConversationRepository.js';
import { HistoryCipher } from './HistoryCipher.js';
import { loadOrCreateHistoryKey } from './loadOrCreateHistoryKey.js';
import { MemoryConversationRepository } from './MemoryConversationRepository.js';
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
 * Opens the history store the config asks for: the encrypted SQLite file in the data dir, or
 * memory only (`--history off`). Replies a crash left streaming are marked interrupted, and with
 * historyDays, conversations idle for longer are deleted now and every hour.
 */
export async function openHistory(config: Pick<Config, 'history' | 'historyDays' | 'historyKeyFile' | 'dataDir'>, logger: Logger): Promise<OpenedHistory> {
  let repository: ConversationRepository;
  let documents: DocumentRepository;
  if (config.history === 'off') {
    const memory = new MemoryConversationRepository();
    repository = memory;
    documents = new MemoryDocumentRepository(memory);
  } else {
    const key = await loadOrCreateHistoryKey({ dataDir: config.dataDir, ...(config.historyKeyFile === undefined ? {} : { keyFile: config.historyKeyFile }) });
    const cipher = new HistoryCipher(key);
    const sqlite = new SqliteConversationRepository({ directory: config.dataDir, cipher });
    repository = sqlite;
    documents = new SqliteDocumentRepository(sqlite, cipher);
  }
  await repository.open();
  const interrupted = await repository.markInterrupted();
  if (interrupted > 0) logger.warn({ interrupted }, 'replies cut off by the last stop are kept as interrupted');
  let timer: NodeJS.Timeout | undefined;
  if (config.historyDays > 0) {
    const purge = async () => {
      const purged = await repository.purgeIdle(Date.now() - config.historyDays * DAY_MS);
      if (purged > 0) logger.info({ purged, historyDays: config.historyDays }, 'idle conversations deleted');
    };
    await purge();
    timer = setInterval(() => void purge().catch((error: unknown) => logger.error({ err: error }, 'purging idle conversations failed')), PURGE_EVERY_MS);
    timer.unref();
  }
  logger.info({ history: config.history, historyDays: config.historyDays }, config.history === 'off' ? 'history: memory only' : 'history: encrypted SQLite in the data dir');
  return {
    repository,
    documents,
    async close() {
      clearInterval(timer);
      await repository.close();
    },
  };
}
