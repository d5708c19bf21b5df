import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTokenService } from '../server/auth/createTokenService.js';
import { loadOrCreateSigningKey } from '../server/auth/loadOrCreateSigningKey.js';
import { HistoryCipher } from '../server/history/HistoryCipher.js';
import { loadOrCreateHistoryKey } from '../server/history/loadOrCreateHistoryKey.js';
import { SqliteConversationRepository } from '../server/history/SqliteConversationRepository.js';
import type { Benchmark, BenchContext } from './Benchmark.js';
import { fillHistory } from './fillHistory.js';
import { cell } from './renderTable.js';
import { ServerProcess } from './ServerProcess.js';

const TURNS = 20;
/** Conversations the owner opens after the start, as someone browsing their history would. */
const OPENED = 100;

interface Column {
  readonly conversations: number;
  readonly fillMs: number;
  readonly rssAfterStart: number;
  readonly rssAfterBrowsing: number;
}

/**
 * The server's memory against its stored history: the real server (a child process) started on a
 * data dir whose history.sqlite holds N conversations of 20 messages, then the owner lists them
 * and opens 100 over the HTTP API; RSS after the start and after that, against an empty store.
 * Only conversations in use are in memory, so the two should be close.
 */
export const historyMemory: Benchmark = {
  name: 'history',
  summary: 'server RSS with 10,000 stored conversations of 20 messages against an empty store',
  async run(context) {
    const sizes = [0, context.quick ? 1000 : 10_000];
    const columns: Column[] = [];
    for (const conversations of sizes) columns.push(await measure(context, conversations));
    const mib = (bytes: number) => cell(bytes / (1024 * 1024), 1);
    return {
      tables: [
        {
          title: `Server memory against stored history (${TURNS} messages per conversation; RSS, MiB)`,
          rows: [
            ['stored conversations', 'RSS after start', `RSS after listing and opening ${OPENED}`, 'fill time (s)'],
            ...columns.map((column) => [cell(column.conversations), mib(column.rssAfterStart), mib(column.rssAfterBrowsing), cell(column.fillMs / 1000, 1)]),
          ],
          notes: ['One owner holds every conversation; the server runs the tiny model. RSS from /proc/<pid>/status.'],
        },
      ],
      data: { turns: TURNS, opened: OPENED, columns },
    };
  },
};

async function measure(context: BenchContext, conversations: number): Promise<Column> {
  const dataDir = await mkdtemp(join(tmpdir(), 'parley-bench-history-'));
  try {
    let fillMs = 0;
    const owner = 'u_fill_0';
    if (conversations > 0) {
      context.progress(`history: filling ${conversations} conversations of ${TURNS} messages`);
      const repository = new SqliteConversationRepository({ directory: dataDir, cipher: new HistoryCipher(await loadOrCreateHistoryKey({ dataDir })) });
      await repository.open();
      fillMs = (await fillHistory(repository, { conversations, turns: TURNS })).ms;
      await repository.close();
    }
    const model = context.lightModel;
    const server = await ServerProcess.start({ transport: 'ws', modelPath: model.path, threads: model.threads, llamaBuild: model.llamaBuild, slots: 2, contextSize: model.contextSize, maxTokens: 16, dataDir });
    try {
      const rssAfterStart = await server.rssBytes();
      const { token } = await createTokenService({ key: await loadOrCreateSigningKey(dataDir), ttlSeconds: 3600 }).issueAccessToken({ userId: owner, name: 'owner' });
      const headers = { authorization: `Bearer ${token}`, origin: server.origin };
      const listed = (await (await fetch(`${server.origin}/api/conversations`, { headers })).json()) as { items: Array<{ id: string }> };
      for (const { id } of listed.items.slice(0, OPENED)) await (await fetch(`${server.origin}/api/conversations/${id}`, { headers })).arrayBuffer();
      const rssAfterBrowsing = await server.rssBytes();
      context.progress(`history: ${conversations} stored, RSS ${(rssAfterStart / 2 ** 20).toFixed(1)} → ${(rssAfterBrowsing / 2 ** 20).toFixed(1)} MiB`);
      return { conversations, fillMs, rssAfterStart, rssAfterBrowsing };
    } finally {
      await server.stop();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
