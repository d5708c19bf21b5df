import type { VersionedMigration } from './pendingMigrations.js';

/** A PostgreSQL migration: SQL run inside the transaction that records its version in `schema_migrations`. */
export interface PostgresMigration extends VersionedMigration {
  readonly sql: string;
}

/**
 * The history schema on PostgreSQL, as the changes that build it. Append only: a shipped
 * migration never changes, because databases out there already recorded its version.
 *
 * The same tables as the SQLite schema (migrations.ts) in one step, with these differences:
 * - Encrypted columns are BYTEA written by HistoryCipher; everything a query filters or sorts on
 *   stays plain.
 * - Ids are `COLLATE "C"`: byte order, the order SQLite's BINARY collation gives, whatever the
 *   database's locale.
 * - A message's `seq` comes from one identity sequence: increasing in append order within a
 *   conversation, so concurrent appends from several gateways never collide on it.
 * - `messages.writer` is the presence key of the gateway that last wrote the row
 *   (PostgresPresence), so a starting gateway can tell a reply another one is still streaming
 *   from one a crash left behind.
 * - Times are epoch milliseconds in BIGINT, as in SQLite.
 */
export const postgresMigrations: readonly PostgresMigration[] = [
  {
    version: 1,
    name: 'conversations, messages, the key check and documents',
    sql: `
      CREATE TABLE conversations (
        id TEXT COLLATE "C" PRIMARY KEY,
        owner_id TEXT COLLATE "C" NOT NULL,
        title BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        model TEXT NOT NULL
      );
      -- A user's list, newest first, read in index order.
      CREATE INDEX conversations_by_owner ON conversations (owner_id, updated_at DESC, id DESC);
      -- purgeIdle: conversations of every owner idle since a time.
      CREATE INDEX conversations_by_updated ON conversations (updated_at);

      CREATE TABLE messages (
        id TEXT COLLATE "C" PRIMARY KEY,
        conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        token_count INTEGER,
        request_id TEXT,
        outcome TEXT CHECK (outcome IN ('streaming', 'done', 'stopped', 'error', 'interrupted')),
        writer INTEGER,
        -- Also the index that reads a conversation in order, counts its messages, and finds
        -- them for ON DELETE CASCADE.
        UNIQUE (conversation_id, seq)
      );
      -- markInterrupted at start: holds only replies still streaming, so it stays tiny.
      CREATE INDEX messages_streaming ON messages (writer) WHERE outcome = 'streaming';

      -- 'key_check': a value sealed at creation, so a wrong key fails open(), not the first read.
      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value BYTEA NOT NULL
      );

      -- An upload: unattached (conversation_id NULL) until a message sends it. Its name is
      -- encrypted; the bytes uploaded are not kept, only the extracted text in chunks.
      CREATE TABLE documents (
        id TEXT COLLATE "C" PRIMARY KEY,
        owner_id TEXT COLLATE "C" NOT NULL,
        conversation_id TEXT COLLATE "C" REFERENCES conversations (id) ON DELETE CASCADE,
        name BYTEA NOT NULL,
        size BIGINT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('text', 'pdf')),
        chars BIGINT NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE INDEX documents_by_owner ON documents (owner_id);
      CREATE INDEX documents_by_conversation ON documents (conversation_id) WHERE conversation_id IS NOT NULL;
      CREATE INDEX documents_unattached ON documents (created_at) WHERE conversation_id IS NULL;

      -- Extracted text in order, each chunk encrypted, with its encrypted vector once computed.
      -- No full-text index here: it would hold the text in plain (ChunkIndex builds one in memory).
      CREATE TABLE document_chunks (
        document_id TEXT COLLATE "C" NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        text BYTEA NOT NULL,
        embedding BYTEA,
        PRIMARY KEY (document_id, seq)
      );

      -- What a message says about documents, encrypted JSON; goes with its message.
      CREATE TABLE message_documents (
        message_id TEXT COLLATE "C" PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        value BYTEA NOT NULL
      );
    `,
  },
];
