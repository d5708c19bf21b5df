/**
 * What the contract suite cannot see of PostgresConversationRepository: migrations under
 * concurrent opens, encryption at rest (values unreadable elsewhere or under another key), the
 * key check, an unreachable database, and markInterrupted beside another running gateway.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { ErrorCode } from '../../shared/errorCodes.js';
import { applyPostgresMigrations } from '../../server/history/applyPostgresMigrations.js';
import { MessageOutcome } from '../../server/history/ConversationRepository.js';
import { ALICE, message, withConversation } from '../helpers/historyFixtures.js';
import { HistoryCipher } from '../../server/history/HistoryCipher.js';
import { HistoryKeyMismatchError } from '../../server/history/HistoryKeyMismatchError.js';
import { HistoryUnreadableError } from '../../server/history/HistoryUnreadableError.js';
import { PostgresConversationRepository } from '../../server/history/PostgresConversationRepository.js';
import { postgresMigrations, type PostgresMigration } from '../../server/history/postgresMigrations.js';
import { SealContext } from '../../server/history/SealContext.js';
import { lazyPostgres, postgresUnavailable } from '../helpers/lazyPostgres.js';
import { freePort } from '../helpers/startRedis.js';

const postgres = lazyPostgres();
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await postgres.close();
});

async function openRepository(url: string, key: Buffer): Promise<PostgresConversationRepository> {
  const repository = new PostgresConversationRepository({ url, cipher: new HistoryCipher(key) });
  cleanups.push(() => repository.close());
  await repository.open();
  return repository;
}

/** A raw connection to the database, for what the repository must not allow itself. */
async function rawClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  cleanups.push(() => client.end());
  return client;
}

describe('PostgresConversationRepository', { skip: postgresUnavailable('PostgresConversationRepository.test.ts') ?? false }, () => {
  test('two gateways opening one new database at once: the migrations run once, under the advisory lock', async () => {
    const url = await postgres.createDatabase();
    const key = randomBytes(32);
    const [first, second] = await Promise.all([openRepository(url, key), openRepository(url, key)]);
    const raw = await rawClient(url);
    const { rows } = await raw.query<{ version: number; name: string }>('SELECT version, name FROM schema_migrations ORDER BY version');
    assert.deepEqual(rows, postgresMigrations.map(({ version, name }) => ({ version, name })));
    // Both work on the one schema: what one writes, the other reads.
    await withConversation(first, 'c1', 'shared title', ['hello']);
    assert.deepEqual((await second.listMessages(ALICE, 'c1')).map((stored) => stored.text), ['hello']);

    // The applier itself, raced from two pools on a fresh database: one applies, the other finds nothing to do.
    const fresh = await postgres.createDatabase();
    const pools = [new pg.Pool({ connectionString: fresh }), new pg.Pool({ connectionString: fresh })];
    cleanups.push(() => Promise.all(pools.map((pool) => pool.end())));
    const applied = await Promise.all(pools.map((pool) => applyPostgresMigrations(pool, postgresMigrations)));
    assert.deepEqual(applied.map((versions) => versions.join(',')).sort(), ['', postgresMigrations.map((migration) => migration.version).join(',')]);
    assert.deepEqual(await applyPostgresMigrations(pools[0] ?? assert.fail(), postgresMigrations), [], 'reopening applies nothing');
  });

  test('a failing migration leaves neither its changes nor its version; a database newer than the code is refused', async () => {
    const url = await postgres.createDatabase();
    const pool = new pg.Pool({ connectionString: url });
    cleanups.push(() => pool.end());
    const failing: PostgresMigration = { version: postgresMigrations.length + 1, name: 'fails halfway', sql: 'CREATE TABLE half_done (a INTEGER); SELECT 1 / 0' };
    await assert.rejects(applyPostgresMigrations(pool, [...postgresMigrations, failing]), /division by zero/);
    const tables = await pool.query("SELECT 1 FROM pg_tables WHERE tablename IN ('half_done', 'conversations')");
    assert.equal(tables.rowCount, 0, 'the whole call rolled back, the earlier migrations with it');
    await applyPostgresMigrations(pool, postgresMigrations);
    await pool.query("INSERT INTO schema_migrations (version, name) VALUES ($1, 'from a newer Parley')", [postgresMigrations.length + 1]);
    await assert.rejects(applyPostgresMigrations(pool, postgresMigrations), /newer than this Parley knows/);
  });

  test('the database holds no message text or title in the clear, though plain columns are readable', async () => {
    const url = await postgres.createDatabase();
    const repository = await openRepository(url, randomBytes(32));
    const secrets = { title: 'Secret-Title-Kestrel-4471', question: 'Secret-Question-Marmot-9034', answer: 'Secret-Answer-Heron-2210', renamed: 'Secret-Renamed-Otter-5512' };
    await withConversation(repository, 'c1', secrets.title, [secrets.question]);
    await repository.appendMessage(ALICE, message('c1_reply', 'c1', '', MessageOutcome.streaming));
    await repository.updateMessage(ALICE, 'c1_reply', { text: secrets.answer, outcome: MessageOutcome.done });
    await withConversation(repository, 'c2', 'short', []);
    await repository.renameConversation(ALICE, 'c2', secrets.renamed);
    const raw = await rawClient(url);
    // Every row of every table, as PostgreSQL prints it (bytea as hex): search for the text and its hex.
    const dump = (await raw.query<{ row: string }>('SELECT t::text AS row FROM conversations t UNION ALL SELECT t::text FROM messages t UNION ALL SELECT t::text FROM meta t')).rows
      .map((row) => row.row)
      .join('\n');
    assert.ok(dump.includes(ALICE), 'the search finds a plain column (the owner id)');
    for (const secret of Object.values(secrets)) {
      assert.equal(dump.includes(secret), false, `${secret} is in the database`);
      assert.equal(dump.includes(Buffer.from(secret).toString('hex')), false, `${secret} is in the database as bytes`);
    }
  });

  test('a ciphertext moved to another row or column, altered, or sealed under another key fails with history_unreadable', async () => {
    const key = randomBytes(32);
    const foreign = new HistoryCipher(randomBytes(32));
    const cases: ReadonlyArray<{ what: string; tamper: string | ((raw: pg.Client) => Promise<unknown>); read: (repository: PostgresConversationRepository) => Promise<unknown> }> = [
      {
        what: 'another message’s text copied over a message',
        tamper: "UPDATE messages SET text = (SELECT text FROM messages WHERE id = 'c1_m0') WHERE id = 'c1_m1'",
        read: (repository) => repository.listMessages(ALICE, 'c1'),
      },
      {
        what: 'a message moved into another conversation',
        tamper: "UPDATE messages SET conversation_id = 'c2' WHERE id = 'c1_m0'",
        read: (repository) => repository.listMessages(ALICE, 'c2'),
      },
      {
        what: 'another conversation’s title copied over a title',
        tamper: "UPDATE conversations SET title = (SELECT title FROM conversations WHERE id = 'c2') WHERE id = 'c1'",
        read: (repository) => repository.getConversation(ALICE, 'c1'),
      },
      {
        what: 'a title copied into a message’s text',
        tamper: "UPDATE messages SET text = (SELECT title FROM conversations WHERE id = 'c1') WHERE id = 'c1_m1'",
        read: (repository) => repository.listMessages(ALICE, 'c1'),
      },
      {
        what: 'a conversation handed to another owner',
        tamper: "UPDATE conversations SET owner_id = 'u_mallory' WHERE id = 'c1'",
        read: (repository) => repository.listConversations('u_mallory'),
      },
      {
        what: 'one bit flipped',
        tamper: "UPDATE messages SET text = set_byte(text, 20, get_byte(text, 20) # 1) WHERE id = 'c1_m1'",
        read: (repository) => repository.listMessages(ALICE, 'c1'),
      },
      {
        what: 'a text sealed for this very row, but under another key',
        tamper: (raw) => raw.query("UPDATE messages SET text = $1 WHERE id = 'c1_m1'", [foreign.encrypt('planted', SealContext.messageText('c1', 'c1_m1'))]),
        read: (repository) => repository.listMessages(ALICE, 'c1'),
      },
      {
        what: 'a title sealed for this very row, but under another key',
        tamper: (raw) => raw.query("UPDATE conversations SET title = $1 WHERE id = 'c1'", [foreign.encrypt('planted', SealContext.title(ALICE, 'c1'))]),
        read: (repository) => repository.listConversations(ALICE),
      },
    ];
    for (const { what, tamper, read } of cases) {
      const url = await postgres.createDatabase();
      const repository = await openRepository(url, key);
      await withConversation(repository, 'c1', 'first title', ['first question', 'second question']);
      await withConversation(repository, 'c2', 'second title', []);
      const raw = await rawClient(url);
      await (typeof tamper === 'string' ? raw.query(tamper) : tamper(raw));

      const error: unknown = await read(repository).then(() => undefined, (caught: unknown) => caught);
      assert.ok(error instanceof HistoryUnreadableError, `${what}: rejects with HistoryUnreadableError, not garbage (got ${String(error)})`);
      assert.equal(error.code, ErrorCode.historyUnreadable);
      assert.deepEqual(error.toWire(), { code: 'history_unreadable', message: 'Stored history could not be read.' }, 'row ids stay out of what a client sees');
    }
  });

  test('a gateway given another history key stops at open, naming the database without its password, and the history stays intact', async () => {
    const url = await postgres.createDatabase();
    const key = randomBytes(32);
    const first = await openRepository(url, key);
    await withConversation(first, 'c1', 'title', ['text']);

    // Trust auth takes any password: this one must still not appear in the error.
    const withPassword = url.replace('postgres://parley@', 'postgres://parley:Hunter2-Secret@');
    const wrong = new PostgresConversationRepository({ url: withPassword, cipher: new HistoryCipher(randomBytes(32)) });
    const error: unknown = await wrong.open().then(() => undefined, (caught: unknown) => caught);
    assert.ok(error instanceof HistoryKeyMismatchError);
    assert.equal(error.code, 'history_key_mismatch');
    assert.match(error.message, /history database at postgres:\/\/\*\*\*:\*\*\*@127\.0\.0\.1:\d+\/\w+ was written with another history key/);
    assert.match(error.message, /same --history-key/);
    assert.equal(error.message.includes('Hunter2-Secret'), false);
    await assert.rejects(wrong.listConversations(ALICE), /closed, not open/);

    assert.deepEqual((await first.listMessages(ALICE, 'c1')).map((stored) => stored.text), ['text']);
  });

  test('an unreachable database fails open() with an error naming it, without its password', async () => {
    const port = await freePort();
    const repository = new PostgresConversationRepository({ url: `postgres://parley:Sup3r-Secret-Pw@127.0.0.1:${port}/parley`, cipher: new HistoryCipher(randomBytes(32)), connectTimeoutMs: 2000 });
    const error: unknown = await repository.open().then(() => undefined, (caught: unknown) => caught);
    assert.ok(error instanceof Error);
    assert.match(error.message, new RegExp(`^cannot reach the history database at postgres://\\*\\*\\*:\\*\\*\\*@127\\.0\\.0\\.1:${port}/parley: `));
    for (const text of [error.message, String(error.stack), JSON.stringify(error), String(error.cause)]) assert.equal(text.includes('Sup3r-Secret-Pw'), false, text);
    await repository.close();
  });

  test('markInterrupted leaves alone a reply another running gateway is streaming, and marks it once that gateway is gone', async () => {
    const url = await postgres.createDatabase();
    const key = randomBytes(32);
    const streaming = await openRepository(url, key);
    await withConversation(streaming, 'c1', 'title', ['question']);
    await streaming.appendMessage(ALICE, message('c1_reply', 'c1', 'half a rep', MessageOutcome.streaming));

    const starting = await openRepository(url, key);
    assert.equal(await starting.markInterrupted(), 0, 'the other gateway still holds its presence lock');
    assert.equal((await starting.listMessages(ALICE, 'c1'))[1]?.outcome, MessageOutcome.streaming);
    // A checkpoint by the streaming gateway keeps it its own.
    assert.equal(await streaming.updateMessage(ALICE, 'c1_reply', { text: 'half a reply' }), true);
    assert.equal(await starting.markInterrupted(), 0);

    await streaming.close();
    const restarted = await openRepository(url, key);
    assert.equal(await restarted.markInterrupted(), 1, 'the gateway that wrote it is gone: its reply is interrupted');
    const reply = (await restarted.listMessages(ALICE, 'c1'))[1];
    assert.deepEqual([reply?.text, reply?.outcome], ['half a reply', MessageOutcome.interrupted]);
  });

  test('a presence session the database cuts comes back with the same key, and its replies stay its own', async () => {
    const url = await postgres.createDatabase();
    const key = randomBytes(32);
    const streaming = await openRepository(url, key);
    await withConversation(streaming, 'c1', 'title', []);
    await streaming.appendMessage(ALICE, message('r1', 'c1', 'partial', MessageOutcome.streaming));
    const raw = await rawClient(url);
    const holders = async () =>
      (await raw.query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND objid::int8 = $1`, [streaming.writerKey])).rows.map((row) => row.pid);
    const [cut] = await holders();
    assert.ok(cut !== undefined, 'the gateway holds its presence lock');
    await raw.query('SELECT pg_terminate_backend($1)', [cut]);
    // A failure bound only: the session reconnects about a second later.
    for (let waited = 0; (await holders()).filter((pid) => pid !== cut).length === 0; waited += 50) {
      assert.ok(waited < 30_000, 'the presence lock came back');
      await sleep(50);
    }
    const starting = await openRepository(url, key);
    assert.equal(await starting.markInterrupted(), 0, 'the reply is still its running gateway’s');
    assert.equal(await streaming.updateMessage(ALICE, 'r1', { text: 'whole', outcome: MessageOutcome.done }), true);
  });

  test('while running, markAbandoned marks the replies of a gateway that stopped, never its own or a running one’s', async () => {
    const url = await postgres.createDatabase();
    const key = randomBytes(32);
    const other = await openRepository(url, key);
    const self = await openRepository(url, key);
    await withConversation(other, 'c1', 'title', []);
    await other.appendMessage(ALICE, message('r_other', 'c1', 'theirs', MessageOutcome.streaming));
    await self.appendMessage(ALICE, message('r_self', 'c1', 'mine', MessageOutcome.streaming));
    const outcomes = async () => (await self.listMessages(ALICE, 'c1')).map((stored) => [stored.id, stored.outcome]);

    assert.equal(await self.markAbandoned(0), 0, 'the other gateway runs, and its own reply is never abandoned');
    await other.close();
    assert.equal(await self.markAbandoned(Number.MAX_SAFE_INTEGER), 0, 'not before its own presence lock has settled');
    assert.equal(await self.markAbandoned(0), 1);
    assert.deepEqual(await outcomes(), [['r_other', MessageOutcome.interrupted], ['r_self', MessageOutcome.streaming]]);
  });

  test('methods before open() and after close() reject; close() twice is fine', async () => {
    const repository = new PostgresConversationRepository({ url: await postgres.createDatabase(), cipher: new HistoryCipher(randomBytes(32)) });
    await assert.rejects(repository.countConversations(ALICE), /created, not open/);
    await repository.open();
    await assert.rejects(repository.open(), /open\(\) runs once/);
    await repository.close();
    await repository.close();
    await assert.rejects(repository.countConversations(ALICE), /closed, not open/);
  });
});
