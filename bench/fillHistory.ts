/**
 * Fills a history store with many conversations, to measure what a large history costs (memory,
 * file size, listing time). As a command, it fills `history.sqlite` in a data dir, encrypted with
 * that dir's `history.key` (created if missing), exactly as the server would find it:
 *
 *   npx tsx bench/fillHistory.ts --data-dir DIR [--conversations 10000] [--turns 20] [--owners 1]
 *                                [--batch 200] [--user-chars 200] [--reply-chars 1200] [--key-file FILE]
 *
 * Prints one JSON line: counts, owner ids, elapsed milliseconds and file sizes.
 */
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { MessageOutcome, type ConversationRepository, type ImportedConversation, type StoredMessage } from '../server/history/ConversationRepository.js';
import { HistoryCipher } from '../server/history/HistoryCipher.js';
import { loadOrCreateHistoryKey } from '../server/history/loadOrCreateHistoryKey.js';
import { HISTORY_FILE, SqliteConversationRepository } from '../server/history/SqliteConversationRepository.js';
import { integerBetween } from './parseArguments.js';

export interface FillOptions {
  readonly conversations: number;
  /** Messages per conversation, alternating user and assistant, starting with the user. */
  readonly turns: number;
  /** Conversations are dealt round-robin to this many owners (`u_fill_0`, `u_fill_1`, ...). */
  readonly owners?: number;
  /** Conversations per importConversations call, which is one transaction. */
  readonly batch?: number;
  /** Mean length of a user message and of a reply, in characters (each varies ±50%). */
  readonly userChars?: number;
  readonly replyChars?: number;
  /** The newest conversation's last message time; older ones are a minute apart. */
  readonly now?: number;
}

export interface FillResult {
  readonly conversations: number;
  readonly messages: number;
  readonly owners: readonly string[];
  readonly ms: number;
}

/**
 * Adds `conversations` × `turns` messages to `repository` through importConversations, `batch`
 * conversations per transaction. Ids carry a random run prefix, so filling the same store twice
 * adds to it instead of colliding.
 */
export async function fillHistory(repository: ConversationRepository, options: FillOptions): Promise<FillResult> {
  const ownerCount = options.owners ?? 1;
  const batch = options.batch ?? 200;
  const userChars = options.userChars ?? 200;
  const replyChars = options.replyChars ?? 1200;
  const now = options.now ?? Date.now();
  const run = randomBytes(4).toString('hex');
  const owners = Array.from({ length: ownerCount }, (_, index) => `u_fill_${index}`);
  const text = textMaker();
  const started = performance.now();
  let messages = 0;
  for (let first = 0; first < options.conversations; first += batch) {
    const entries: ImportedConversation[] = [];
    for (let index = first; index < Math.min(first + batch, options.conversations); index += 1) {
      const id = `c_${run}_${index}`;
      const lastAt = now - (options.conversations - 1 - index) * 60_000;
      const startAt = lastAt - Math.max(0, options.turns - 1) * 1000;
      const conversationMessages: StoredMessage[] = Array.from({ length: options.turns }, (_, turn) => {
        const isUser = turn % 2 === 0;
        return {
          id: `m_${run}_${index}_${turn}`,
          conversationId: id,
          role: isUser ? 'user' : 'assistant',
          text: text(isUser ? userChars : replyChars),
          createdAt: startAt + turn * 1000,
          tokenCount: isUser ? undefined : Math.round(replyChars / 4),
          requestId: isUser ? undefined : `r_${run}_${index}_${turn}`,
          outcome: isUser ? undefined : MessageOutcome.done,
        };
      });
      messages += conversationMessages.length;
      entries.push({
        conversation: {
          id,
          ownerId: owners[index % ownerCount] as string,
          title: text(40),
          createdAt: startAt,
          updatedAt: options.turns > 0 ? lastAt : startAt,
          model: 'fill',
        },
        messages: conversationMessages,
      });
    }
    await repository.importConversations(entries);
  }
  return { conversations: options.conversations, messages, owners, ms: Math.round(performance.now() - started) };
}

/** Text of about `mean` characters (±50%), cut from a fixed pool of words at varying offsets. */
function textMaker(): (mean: number) => string {
  const words = ['the', 'model', 'answers', 'quickly', 'local', 'network', 'server', 'history', 'token', 'stream', 'a', 'question', 'about', 'rust', 'gardens', 'and', 'bread'];
  let pool = '';
  for (let index = 0; pool.length < 100_000; index += 1) pool += `${words[(index * 7 + (index >> 3)) % words.length]} `;
  let seed = 1;
  const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  return (mean) => {
    const length = Math.max(1, Math.round(mean * (0.5 + next())));
    const start = Math.floor(next() * (pool.length - length - 1));
    return pool.slice(start, start + length);
  };
}

async function main(argv: readonly string[]): Promise<void> {
  const program = new Command('fillHistory')
    .description('Fill a data dir\'s encrypted history.sqlite with generated conversations.')
    .requiredOption('--data-dir <dir>', 'data dir holding history.sqlite and history.key')
    .addOption(new Option('--conversations <n>', 'conversations to add').argParser(integerBetween(1, 10_000_000)).default(10_000))
    .addOption(new Option('--turns <n>', 'messages per conversation').argParser(integerBetween(0, 10_000)).default(20))
    .addOption(new Option('--owners <n>', 'owners the conversations are dealt to').argParser(integerBetween(1, 1_000_000)).default(1))
    .addOption(new Option('--batch <n>', 'conversations per transaction').argParser(integerBetween(1, 100_000)).default(200))
    .addOption(new Option('--user-chars <n>', 'mean user message length').argParser(integerBetween(1, 1_000_000)).default(200))
    .addOption(new Option('--reply-chars <n>', 'mean reply length').argParser(integerBetween(1, 1_000_000)).default(1200))
    .option('--key-file <file>', 'history key file (default: history.key in the data dir, created if missing)')
    .parse(argv);
  const options = program.opts<{
    dataDir: string;
    conversations: number;
    turns: number;
    owners: number;
    batch: number;
    userChars: number;
    replyChars: number;
    keyFile?: string;
  }>();
  const dataDir = resolve(options.dataDir);
  const key = await loadOrCreateHistoryKey({ dataDir, ...(options.keyFile === undefined ? {} : { keyFile: options.keyFile }) });
  const repository = new SqliteConversationRepository({ directory: dataDir, cipher: new HistoryCipher(key) });
  await repository.open();
  try {
    const result = await fillHistory(repository, options);
    await repository.close();
    const sizes: Record<string, number> = {};
    for (const name of (await readdir(dataDir)).filter((file) => file.startsWith(HISTORY_FILE))) sizes[name] = (await stat(join(dataDir, name))).size;
    process.stdout.write(`${JSON.stringify({ ...result, owners: result.owners.length > 10 ? result.owners.length : result.owners, dataDir, sizes })}\n`);
  } finally {
    await repository.close();
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv).catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
