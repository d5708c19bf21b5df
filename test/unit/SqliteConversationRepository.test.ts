import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { ErrorCode } from '../../shared/errorCodes.js';
import { applyMigrations } from '../../server/history/applyMigrations.js';
import { MessageOutcome } from '../../server/history/ConversationRepository.js';
import { ALICE, message, T0, withConversation } from '../helpers/historyFixtures.js';
import { HistoryCipher } from '../../server/history/HistoryCipher.js';
import { HistoryKeyMismatchError } from '../../server/history/HistoryKeyMismatchError.js';
import { HistoryUnreadableError } from '../../server/history/HistoryUnreadableError.js';
import { HISTORY_KEY_FILE, loadOrCreateHistoryKey } from '../../server/history/loadOrCreateHistoryKey.js';
import { migrations, type Migration } from '../../server/history/migrations.js';
import { HISTORY_FILE, SqliteConversationRepository } from '../../server/history/SqliteConversationRepository.js';

const dirs: string[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function freshDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-sqlite-'));
  dirs.push(dir);
  return dir;
}

async function openRepository(directory: string, key: Buffer): Promise<SqliteConversationRepository> {
  const repository = new SqliteConversationRepository({ directory, cipher: new HistoryCipher(key) });
  cleanups.push(() => repository.close());
  await repository.open();
  return repository;
}

/** A second, raw connection to the file, for what the repository must not allow itself. */
function rawDatabase(directory: string, options: Database.Options = {}): Database.Database {
  const db = new Database(join(directory, HISTORY_FILE), options);
  cleanups.push(() => {
    if (db.open) db.close();
  });
  return db;
}

/** Every file SQLite keeps for the database: the file itself, and its -wal and -shm when present. */
async function databaseFiles(directory: string): Promise<string[]> {
  return (await readdir(directory)).filter((name) => name.startsWith(HISTORY_FILE)).map((name) => join(directory, name));
}

async function filesContaining(directory: string, needle: Buffer): Promise<string[]> {
  const found: string[] = [];
  for (const file of await databaseFiles(directory)) {
    if ((await readFile(file)).includes(needle)) found.push(file);
  }
  return found;
}

describe('SqliteConversationRepository', () => {
  test('conversations survive close and reopen with the same key', async () => {
    const dir = await freshDataDir();
    const key = randomBytes(32);
    const first = await openRepository(dir, key);
    await withConversation(first, 'c1', 'Trip to Lisbon', ['Where should we eat?', 'Try the tascas in Alfama.']);
    await first.appendMessage(ALICE, message('c1_reply', 'c1', 'half a rep', MessageOutcome.streaming));
    const before = { list: await first.listConversations(ALICE), messages: await first.listMessages(ALICE, 'c1') };
    await first.close();

    const second = await openRepository(dir, key);
    assert.deepEqual({ list: await second.listConversations(ALICE), messages: await second.listMessages(ALICE, 'c1') }, before);
    assert.equal(await second.markInterrupted(), 1, 'the reply that was streaming at close is found at the next start');
  });

  test('migrations run once, each recorded in user_version; reopening applies nothing', async () => {
    const dir = await freshDataDir();
    const key = randomBytes(32);
    await (await openRepository(dir, key)).close();
    await (await openRepository(dir, key)).close();
    const db = rawDatabase(dir);
    assert.equal(db.pragma('user_version', { simple: true }), migrations.length);
    assert.deepEqual(applyMigrations(db, migrations), [], 'nothing left to apply');
    const tables = db.prepare<[], { name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all().map((row) => row.name);
    assert.deepEqual(tables, ['conversations', 'document_chunks', 'documents', 'message_documents', 'messages', 'meta']);
  });

  test('an appended migration applies once; a failing one leaves neither its changes nor its version', async () => {
    const db = new Database(':memory:');
    cleanups.push(() => {
      db.close();
    });
    assert.deepEqual(applyMigrations(db, migrations), migrations.map((migration) => migration.version));
    const added: Migration = { version: migrations.length + 1, name: 'add a column', up: (target) => target.exec('ALTER TABLE conversations ADD COLUMN pinned INTEGER') };
    assert.deepEqual(applyMigrations(db, [...migrations, added]), [added.version]);
    assert.deepEqual(applyMigrations(db, [...migrations, added]), []);

    const failing: Migration = {
      version: added.version + 1,
      name: 'fails halfway',
      up: (target) => {
        target.exec('CREATE TABLE half_done (x INTEGER)');
        throw new Error('migration failed');
      },
    };
    assert.throws(() => applyMigrations(db, [...migrations, added, failing]), /migration failed/);
    assert.equal(db.pragma('user_version', { simple: true }), added.version);
    assert.equal(db.prepare("SELECT 1 FROM sqlite_schema WHERE name = 'half_done'").get(), undefined);

    assert.throws(() => applyMigrations(db, migrations), /newer than this Parley knows/, 'a database newer than the code is refused');
    assert.throws(() => applyMigrations(db, [...migrations, { ...added, version: added.version + 3 }]), new RegExp(`has version ${added.version + 3}, expected ${added.version}`), 'versions count up from 1');
  });

  test('the database, its -wal and -shm, and the key file are mode 0600', async () => {
    const dir = await freshDataDir();
    const repository = await openRepository(dir, await loadOrCreateHistoryKey({ dataDir: dir }));
    await withConversation(repository, 'c1', 'title', ['text']);
    const files = await databaseFiles(dir);
    assert.deepEqual(files.map((file) => file.slice(dir.length + 1)).sort(), [HISTORY_FILE, `${HISTORY_FILE}-shm`, `${HISTORY_FILE}-wal`]);
    for (const file of [...files, join(dir, HISTORY_KEY_FILE)]) assert.equal((await stat(file)).mode & 0o777, 0o600, file);
  });

  test('a database file that others can read is refused', async () => {
    const dir = await freshDataDir();
    await (await openRepository(dir, randomBytes(32))).close();
    await chmod(join(dir, HISTORY_FILE), 0o644);
    await assert.rejects(openRepository(dir, randomBytes(32)), /readable by other users.*chmod 600/);
  });

  test('the database files alone reveal no message text or title, though plain columns are readable', async () => {
    const dir = await freshDataDir();
    const repository = await openRepository(dir, randomBytes(32));
    const secrets = { title: 'Secret-Title-Kestrel-4471', question: 'Secret-Question-Marmot-9034', answer: 'Secret-Answer-Heron-2210', renamed: 'Secret-Renamed-Otter-5512' };
    await withConversation(repository, 'c1', secrets.title, [secrets.question]);
    await repository.appendMessage(ALICE, message('c1_reply', 'c1', '', MessageOutcome.streaming));
    await repository.updateMessage(ALICE, 'c1_reply', { text: secrets.answer, outcome: MessageOutcome.done });
    await withConversation(repository, 'c2', secrets.renamed.slice(0, 10), []);
    await repository.renameConversation(ALICE, 'c2', secrets.renamed);

    const check = async (when: string) => {
      assert.notDeepEqual(await filesContaining(dir, Buffer.from(ALICE)), [], `${when}: the search finds a plain column (the owner id)`);
      for (const secret of Object.values(secrets)) {
        for (const encoding of ['utf8', 'utf16le'] as const) {
          assert.deepEqual(await filesContaining(dir, Buffer.from(secret, encoding)), [], `${when}: ${secret} (${encoding}) is in no database file`);
        }
      }
    };
    assert.ok((await databaseFiles(dir)).some((file) => file.endsWith('-wal')), 'the writes are still in the WAL');
    await check('while open, with the WAL uncheckpointed');
    await repository.close();
    await check('after close');
    assert.equal((await databaseFiles(dir)).length, 1, 'close folds the WAL into the database file');
  });

  test('a ciphertext moved to another row or column, or altered, fails with history_unreadable', async () => {
    const key = randomBytes(32);
    const flipBit = (db: Database.Database) => {
      const row = db.prepare<[], { text: Buffer }>("SELECT text FROM messages WHERE id = 'c1_m1'").get();
      assert.ok(row);
      row.text[20] = (row.text[20] ?? 0) ^ 1;
      db.prepare<[Buffer]>("UPDATE messages SET text = ? WHERE id = 'c1_m1'").run(row.text);
    };
    const cases: ReadonlyArray<{ what: string; tamper: (db: Database.Database) => void; read: (repository: SqliteConversationRepository) => Promise<unknown> }> = [
      {
        what: 'another message’s text copied over a message',
        tamper: (db) => db.exec("UPDATE messages SET text = (SELECT text FROM messages WHERE id = 'c1_m0') WHERE id = 'c1_m1'"),
        read: (repository) => repository.listMessages(ALICE, 'c1'),
      },
      {
        what: 'a message moved into another conversation',
        tamper: (db) => db.exec("UPDATE messages SET conversation_id = 'c2' WHERE id = 'c1_m0'"),
        read: (repository) => repository.listMessages(ALICE, 'c2'),
      },
      {
        what: 'another conversation’s title copied over a title',
        tamper: (db) => db.exec("UPDATE conversations SET title = (SELECT title FROM conversations WHERE id = 'c2') WHERE id = 'c1'"),
        read: (repository) => repository.getConversation(ALICE, 'c1'),
      },
      {
        what: 'a title copied into a message’s text',
        tamper: (db) => db.exec("UPDATE messages SET text = (SELECT title FROM conversations WHERE id = 'c1') WHERE id = 'c1_m1'"),
        read: (repository) => repository.listMessages(ALICE, 'c1'),
      },
      {
        what: 'a conversation handed to another owner',
        tamper: (db) => db.exec("UPDATE conversations SET owner_id = 'u_mallory' WHERE id = 'c1'"),
        read: (repository) => repository.listConversations('u_mallory'),
      },
      { what: 'one bit flipped', tamper: flipBit, read: (repository) => repository.listMessages(ALICE, 'c1') },
    ];
    for (const { what, tamper, read } of cases) {
      const dir = await freshDataDir();
      const writer = await openRepository(dir, key);
      await withConversation(writer, 'c1', 'first title', ['first question', 'second question']);
      await withConversation(writer, 'c2', 'second title', []);
      await writer.close();
      const db = rawDatabase(dir);
      tamper(db);
      db.close();

      const reader = await openRepository(dir, key);
      const error: unknown = await read(reader).then(() => undefined, (caught: unknown) => caught);
      assert.ok(error instanceof HistoryUnreadableError, `${what}: rejects with HistoryUnreadableError, not garbage (got ${String(error)})`);
      assert.equal(error.code, ErrorCode.historyUnreadable);
      assert.deepEqual(error.toWire(), { code: 'history_unreadable', message: 'Stored history could not be read.' }, 'row ids stay out of what a client sees');
    }
  });

  test('a deleted message’s and conversation’s ciphertext is in no database file afterwards (secure_delete)', async () => {
    const dir = await freshDataDir();
    const repository = await openRepository(dir, randomBytes(32));
    // A long text spans overflow pages: those must be wiped as well as the row's own page.
    await withConversation(repository, 'c1', 'kept title', ['kept question', 'doomed question '.repeat(2000)]);
    await withConversation(repository, 'c2', 'doomed title', ['doomed too']);
    const raw = rawDatabase(dir, { readonly: true });
    const ciphertext = (sql: string) => raw.prepare<[], { value: Buffer }>(sql).get()?.value ?? assert.fail(sql);
    const doomed = [
      ciphertext("SELECT text AS value FROM messages WHERE id = 'c1_m1'"),
      ciphertext("SELECT title AS value FROM conversations WHERE id = 'c2'"),
      ciphertext("SELECT text AS value FROM messages WHERE id = 'c2_m0'"),
    ];
    const kept = ciphertext("SELECT text AS value FROM messages WHERE id = 'c1_m0'");
    raw.close();
    // 32-byte pieces every 256 bytes: long values are split across pages, so look for pieces.
    const pieces = doomed.map((value) => Array.from({ length: Math.ceil(value.length / 256) }, (_, index) => value.subarray(index * 256, index * 256 + 32)));
    const found = async () => {
      const hits = await Promise.all(pieces.flat().map(async (piece) => (await filesContaining(dir, piece)).length > 0));
      return hits.filter(Boolean).length;
    };
    for (const [index, valuePieces] of pieces.entries()) {
      assert.notDeepEqual(await filesContaining(dir, valuePieces[0] ?? assert.fail()), [], `before deleting, the search finds doomed value ${index}`);
    }
    assert.ok((await found()) > pieces.flat().length / 2, 'and most pieces of the long one (a piece across a page boundary is split)');

    assert.equal(await repository.deleteMessages(ALICE, 'c1', ['c1_m1']), 1);
    assert.equal(await repository.deleteConversation(ALICE, 'c2'), true);
    assert.equal(await found(), 0, 'no piece of a deleted value is left in the database, its WAL or its shm');
    assert.notDeepEqual(await filesContaining(dir, kept.subarray(0, 32)), [], 'what was not deleted is still there');
    assert.deepEqual((await repository.listMessages(ALICE, 'c1')).map((stored) => stored.text), ['kept question']);
  });

  test('opening with another key fails at open, clearly, and leaves the history intact', async () => {
    const dir = await freshDataDir();
    const key = randomBytes(32);
    const first = await openRepository(dir, key);
    await withConversation(first, 'c1', 'title', ['text']);
    await first.close();

    const wrong = new SqliteConversationRepository({ directory: dir, cipher: new HistoryCipher(randomBytes(32)) });
    const error: unknown = await wrong.open().then(() => undefined, (caught: unknown) => caught);
    assert.ok(error instanceof HistoryKeyMismatchError);
    assert.equal(error.code, 'history_key_mismatch');
    assert.match(error.message, /history\.sqlite was written with another history key/);
    await assert.rejects(wrong.listConversations(ALICE), /not open/);

    const again = await openRepository(dir, key);
    assert.deepEqual((await again.listMessages(ALICE, 'c1')).map((stored) => stored.text), ['text']);
  });

  test('purgeIdle deletes in batches and still deletes them all', async () => {
    const dir = await freshDataDir();
    const repository = new SqliteConversationRepository({ directory: dir, cipher: new HistoryCipher(randomBytes(32)), purgeBatchSize: 3 });
    cleanups.push(() => repository.close());
    await repository.open();
    for (let index = 0; index < 10; index += 1) await withConversation(repository, `c${index}`, 'title', ['text']);
    assert.equal(await repository.purgeIdle(T0 + 10), 10);
    assert.equal(await repository.countConversations(ALICE), 0);
  });

  test('methods before open() and after close() reject; close() twice is fine', async () => {
    const repository = new SqliteConversationRepository({ directory: await freshDataDir(), cipher: new HistoryCipher(randomBytes(32)) });
    await assert.rejects(repository.countConversations(ALICE), /created, not open/);
    await repository.open();
    await assert.rejects(repository.open(), /open\(\) runs once/);
    await repository.close();
    await repository.close();
    await assert.rejects(repository.countConversations(ALICE), /closed, not open/);
  });
});
