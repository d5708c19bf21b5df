import {
  LlamaChatSession,
  type ChatHistoryItem,
  type ChatWrapper,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaGrammar,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';
import { BadRequestError, ContextOverflowError, EngineError } from '../ParleyError.js';
import { DecodeBarrier } from './DecodeBarrier.js';
import { EngineStopReason, type Engine, type EngineInfo, type GenerateRequest, type GenerateResult, type PromptPlan, type ResponseFormat, type Turn } from './Engine.js';
import type { GpuChoice, GpuLayersChoice, LlamaDevice } from './GpuChoice.js';
import type { LlamaBuild, LlamaBuildChoice } from './LlamaBuild.js';
import { describeDevice } from './describeDevice.js';
import { loadLlamaModel, type LoadedLlamaModel } from './loadLlamaModel.js';

export interface LlamaEngineOptions {
  readonly modelPath: string;
  /** Shown to users; defaults to the GGUF's general.name. */
  readonly displayName?: string;
  readonly demo: boolean;
  /** A count, or `auto` (see chooseThreads). */
  readonly threads: number | 'auto';
  readonly slots: number;
  /** Per sequence. Capped at the model's training context. */
  readonly contextSize: number;
  readonly temperature: number;
  readonly systemPrompt?: string;
  readonly log?: (level: string, message: string) => void;
  /** The llama.cpp binary (see LlamaBuildChoice); prebuilt by default. */
  readonly build?: LlamaBuildChoice;
  /** The backend (see GpuChoice); auto by default. */
  readonly gpu?: GpuChoice;
  /** Layers to offload when a GPU runs (see GpuLayersChoice); auto by default. */
  readonly gpuLayers?: GpuLayersChoice;
}

/** Where the model runs, as loadLlamaModel found it. */
type EngineRuntime = Omit<LoadedLlamaModel, 'llama' | 'model'>;

interface SequenceSlot {
  readonly sequence: LlamaContextSequence;
  /** The sequence's id in the context; slots are kept in ascending id order. */
  readonly id: number;
  /** The conversation whose tokens this sequence's KV cache holds, if any. */
  conversationId: string | undefined;
  /** True while a generation runs on the sequence. */
  busy: boolean;
}

/** The smallest reply room a message must leave; below it the message is refused. */
const MIN_REPLY_TOKENS = 8;
/**
 * Tokens kept free beyond the counted prompt. The session may evaluate a few tokens more than
 * the wrapper's rendering counts (BOS, separators), and a reply that runs past the context
 * makes node-llama-cpp spin (seen with 3.22.1), so the reply budget never reaches the last tokens.
 */
const CONTEXT_MARGIN = 16;
/** Distinct response formats whose grammars are kept compiled. */
const MAX_GRAMMARS = 16;
/** See DecodeBarrierOptions.maxWaitMs: a bound for stalls, far above a lockstep step's arrival spread. */
const LOCKSTEP_MAX_WAIT_MS = 20;
/**
 * See DecodeBarrierOptions.promptsPerDecode. Each decode pays a fixed cost (a pass over the
 * weights) beside the per-token work, so pairs finish a burst sooner than one prompt at a time,
 * while more per decode make the early replies wait for the others' prompts. Measured in process
 * on the 0.5B shape, 2 threads, bursts of 8 fresh requests (mean / last first token, ms): 1 per
 * decode 1,125 / 2,040; 2: 1,050 / 1,770; 4: 1,290 / 1,810; all: 1,440 / 1,620. Bursts of 4:
 * 1: 575 / 940; 2: 595 / 885.
 */
const PROMPTS_PER_DECODE = 2;
/**
 * See DecodeBarrierOptions.promptChunkTokens. A 128-token chunk of the 0.5B shape takes about
 * 0.65 s on 2 cores, so a reply running beside a long prompt still gets a token about that often;
 * each chunk adds a decode's fixed cost (about 40 ms there) to the prompt.
 */
const PROMPT_CHUNK_TOKENS = 128;

/**
 * Decodes one token on a sequence of its own and clears it, as llama-server does at start, so the
 * first decode's one-off costs (reading the weights in from disk, llama.cpp's first-run setup) fall
 * on startup rather than on the first user's first token. 47 ms for the 0.5B shape with its file
 * already in the page cache.
 */
async function warmUp(context: LlamaContext, model: LlamaModel, log: LlamaEngineOptions['log']): Promise<void> {
  const started = performance.now();
  const sequence = context.getSequence();
  try {
    await sequence.evaluateWithoutGeneratingNewTokens([model.tokens.bos ?? model.tokens.eos ?? (0 as Token)]);
  } finally {
    await sequence.clearHistory();
    sequence.dispose();
  }
  log?.('debug', `model warmed up in ${Math.round(performance.now() - started)} ms`);
}

/**
 * node-llama-cpp engine: one model, one context with `slots` sequences, a chat session per
 * generation. A sequence is cleared before it serves a different conversation, so no KV
 * state crosses conversations; a conversation whose tokens a free sequence still holds gets that
 * sequence back and reuses its prefix.
 *
 * Concurrent generations advance in lockstep (see DecodeBarrier), and each takes the free
 * sequence with the lowest id unless its own cache is free: llama.cpp computes a step in one pass
 * only over consecutive sequence ids, so generations packed at the low ids batch fully. The
 * caller's `slot` only bounds concurrency (the Scheduler runs at most `slots` at once); which
 * sequence serves a request is the engine's choice.
 */
export class LlamaEngine implements Engine {
  readonly info: EngineInfo;
  readonly slots: number;
  /** The llama.cpp binary that runs this model. */
  readonly build: LlamaBuild;
  /** Why that binary runs, for the startup log. */
  readonly buildReason: string;
  /** The backend llama.cpp computes with: `cuda`, `metal`, `vulkan`, or `false` for the CPU. */
  readonly device: LlamaDevice;
  /** Why that backend (`no GPU found`, `--gpu off`, ...), for the startup log. */
  readonly deviceReason: string;
  /** Model layers offloaded to the GPU; 0 when the model runs on the CPU. */
  readonly gpuLayers: number;
  /** The model's layers, as node-llama-cpp counts them for offloading. */
  readonly totalLayers: number;
  /** The threads llama.cpp computes with. */
  readonly threads: number;
  /** Why that many, for the startup log. */
  readonly threadsReason: string;
  private readonly sequenceSlots: SequenceSlot[];
  private readonly initialHistory: ChatHistoryItem[];
  /** Compiled grammars by format, oldest first. */
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>();
  /** The prompt of an empty message with no history: what countTurnTokens subtracts. */
  private emptyPromptTokens: number | undefined;

  private constructor(
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    private readonly chatWrapper: ChatWrapper,
    private readonly barrier: DecodeBarrier | undefined,
    private readonly options: LlamaEngineOptions,
    runtime: EngineRuntime,
  ) {
    this.build = runtime.build;
    this.buildReason = runtime.buildReason;
    this.device = runtime.device;
    this.deviceReason = runtime.deviceReason;
    this.gpuLayers = runtime.gpuLayers;
    this.totalLayers = runtime.totalLayers;
    this.threads = runtime.threads;
    this.threadsReason = runtime.threadsReason;
    this.slots = options.slots;
    this.sequenceSlots = Array.from({ length: options.slots }, () => {
      const sequence = context.getSequence();
      return { sequence, id: DecodeBarrier.sequenceIdOf(sequence), conversationId: undefined, busy: false };
    }).sort((a, b) => a.id - b.id);
    this.initialHistory = options.systemPrompt ? chatWrapper.generateInitialChatHistory({ systemPrompt: options.systemPrompt }) : [];
    this.info = {
      name: options.displayName ?? modelName(model, options.modelPath),
      demo: options.demo,
      contextSize: context.contextSize,
      runtime: { device: runtime.device === false ? 'cpu' : runtime.device, gpuLayers: runtime.gpuLayers, totalLayers: runtime.totalLayers, summary: describeDevice(runtime) },
    };
  }

  static async load(options: LlamaEngineOptions): Promise<LlamaEngine> {
    const { llama, model, ...runtime } = await loadLlamaModel({
      modelPath: options.modelPath,
      threads: options.threads,
      logger: options.log,
      build: options.build,
      gpu: options.gpu,
      gpuLayers: options.gpuLayers,
      fitContextTokens: options.slots * options.contextSize,
    });
    const { threads } = runtime;
    try {
      const context = await model.createContext({
        sequences: options.slots,
        contextSize: Math.min(options.contextSize, model.trainContextSize),
        threads,
      });
      // Resolve the chat wrapper once (from the GGUF's template) through a throwaway session.
      const probe = new LlamaChatSession({ contextSequence: context.getSequence(), autoDisposeSequence: true });
      const chatWrapper = probe.chatWrapper;
      probe.dispose({ disposeSequence: true });
      await warmUp(context, model, options.log);
      const barrier = DecodeBarrier.install(context, { maxWaitMs: LOCKSTEP_MAX_WAIT_MS, promptsPerDecode: PROMPTS_PER_DECODE, promptChunkTokens: PROMPT_CHUNK_TOKENS });
      if (barrier === undefined) options.log?.('warn', 'node-llama-cpp has no LlamaContext._decodeTokens; concurrent generations will not batch fully');
      return new LlamaEngine(llama, model, context, chatWrapper, barrier, options, runtime);
    } catch (error) {
      await model.dispose();
      throw error;
    }
  }

  get chatWrapperName(): string {
    return this.chatWrapper.wrapperName;
  }

  planPrompt(history: readonly Turn[], text: string, maxTokens: number, system?: string): PromptPlan {
    const contextSize = this.context.contextSize;
    const alone = this.countPromptTokens([], text, system);
    if (alone + MIN_REPLY_TOKENS + CONTEXT_MARGIN > contextSize) {
      throw new ContextOverflowError(
        `This message is about ${alone} tokens; the model's context holds ${contextSize} tokens including the reply. Shorten it.`,
      );
    }
    const turnTokens = history.map((turn) => turn.tokens ?? this.countTurnTokens(turn));
    // Keep the newest turns (dropping the oldest a user turn and its reply at a time) that leave
    // room for the full reply, or at least a quarter of the context: one pass over the counts.
    const reserve = Math.min(maxTokens, Math.floor(contextSize / 4));
    const budget = contextSize - reserve - CONTEXT_MARGIN;
    let firstTurn = 0;
    let estimate = alone + turnTokens.reduce((sum, tokens) => sum + tokens, 0);
    while (estimate > budget && firstTurn < history.length) {
      estimate -= (turnTokens[firstTurn] ?? 0) + (turnTokens[firstTurn + 1] ?? 0);
      firstTurn += 2;
    }
    // Per-turn counts add up to the rendered prompt only nearly (a template may join turns):
    // one exact count of the chosen window, and a further cut in the rare case it is over.
    let promptTokens = this.countPromptTokens(history.slice(firstTurn), text, system);
    while (promptTokens > budget && firstTurn < history.length) {
      firstTurn = Math.min(history.length, firstTurn + 2);
      promptTokens = this.countPromptTokens(history.slice(firstTurn), text, system);
    }
    const room = Math.max(MIN_REPLY_TOKENS, contextSize - promptTokens - CONTEXT_MARGIN);
    return { firstTurn, promptTokens, maxTokens: Math.min(maxTokens, room), limitedByContext: room < maxTokens, turnTokens };
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    if (!Number.isInteger(request.slot) || request.slot < 0 || request.slot >= this.slots) throw new RangeError(`no slot ${request.slot}`);
    const slot = this.takeSequence(request.conversationId);
    // A stopped reply must not wait for the other generations' next step.
    const leaveLockstep = (): void => this.barrier?.end(slot.id);
    let session: LlamaChatSession | undefined;
    try {
      if (slot.conversationId !== request.conversationId) {
        slot.conversationId = undefined;
        await slot.sequence.clearHistory();
      }
      slot.conversationId = request.conversationId;
      session = new LlamaChatSession({ contextSequence: slot.sequence, chatWrapper: this.chatWrapper, autoDisposeSequence: false });
      // Tokens the sequence evaluates as input from here on are the prompt's uncached part.
      const evaluatedBefore = slot.sequence.tokenMeter.usedInputTokens;
      const options = request.options ?? {};
      session.setChatHistory(this.toChatHistory(request.history, options.system));
      const grammar = options.format === undefined ? undefined : await this.grammarFor(options.format);
      let completionTokens = 0;
      this.barrier?.begin(slot.id);
      request.signal.addEventListener('abort', leaveLockstep, { once: true });
      const result = await session.promptWithMeta(request.text, {
        signal: request.signal,
        stopOnAbortSignal: true,
        maxTokens: request.maxTokens,
        temperature: options.temperature ?? this.options.temperature,
        ...(options.topP === undefined ? {} : { topP: options.topP }),
        ...(options.seed === undefined ? {} : { seed: options.seed }),
        ...(options.stop === undefined || options.stop.length === 0 ? {} : { customStopTriggers: [...options.stop] }),
        ...(grammar === undefined ? {} : { grammar }),
        trimWhitespaceSuffix: false,
        onToken: (tokens) => {
          completionTokens += tokens.length;
        },
        onTextChunk: (text) => {
          if (text.length > 0) request.onText(text);
        },
      });
      const stopReason = request.signal.aborted
        ? EngineStopReason.aborted
        : result.stopReason === 'maxTokens'
          ? EngineStopReason.maxTokens
          : EngineStopReason.endOfText;
      const promptTokens = Math.max(0, slot.sequence.nextTokenIndex - completionTokens);
      return {
        text: result.responseText,
        stopReason,
        promptTokens,
        completionTokens,
        cachedPromptTokens: Math.max(0, promptTokens - (slot.sequence.tokenMeter.usedInputTokens - evaluatedBefore)),
      };
    } catch (error) {
      leaveLockstep();
      // The sequence may hold a half-evaluated state: forget it so the next user starts clean.
      slot.conversationId = undefined;
      await slot.sequence.clearHistory().catch(() => undefined);
      // An abort before the first token (during prompt evaluation) rejects with the abort
      // reason; stopOnAbortSignal only covers generation. It is a stop, not a failure.
      if (request.signal.aborted) return { text: '', stopReason: EngineStopReason.aborted, promptTokens: 0, completionTokens: 0 };
      throw new EngineError(error);
    } finally {
      request.signal.removeEventListener('abort', leaveLockstep);
      leaveLockstep();
      session?.dispose({ disposeSequence: false });
      slot.busy = false;
    }
  }

  async dispose(): Promise<void> {
    this.barrier?.dispose();
    await this.context.dispose();
    await this.model.dispose();
    void this.llama;
  }

  /**
   * The free sequence holding this conversation's tokens, else the free sequence with the lowest
   * id. The Scheduler never runs more than `slots` generations, so one is always free.
   */
  private takeSequence(conversationId: string): SequenceSlot {
    const free = this.sequenceSlots.filter((slot) => !slot.busy);
    const chosen = free.find((slot) => slot.conversationId === conversationId) ?? free[0];
    if (chosen === undefined) throw new RangeError(`all ${this.slots} sequences are busy`);
    chosen.busy = true;
    return chosen;
  }

  async prepareFormat(format: ResponseFormat): Promise<void> {
    await this.grammarFor(format);
  }

  /** The grammar that enforces `format`, compiled once per distinct format (a few are kept). */
  private grammarFor(format: ResponseFormat): Promise<LlamaGrammar> {
    const key = JSON.stringify(format);
    let grammar = this.grammars.get(key);
    if (grammar === undefined) {
      grammar = (format.type === 'json'
        ? this.llama.getGrammarFor('json')
        : this.llama.createGrammarForJsonSchema(format.schema as Parameters<Llama['createGrammarForJsonSchema']>[0])
      ).catch((error: unknown) => {
        this.grammars.delete(key);
        throw new BadRequestError(`This response_format cannot be enforced: ${error instanceof Error ? error.message : String(error)}`.slice(0, 500));
      });
      this.grammars.set(key, grammar);
      if (this.grammars.size > MAX_GRAMMARS) this.grammars.delete(this.grammars.keys().next().value as string);
    }
    return grammar;
  }

  /** What one turn adds to a prompt: the prompt with it, less the prompt without it (an empty message either way). */
  private countTurnTokens(turn: Turn): number {
    this.emptyPromptTokens ??= this.countPromptTokens([], '');
    return Math.max(0, this.countPromptTokens([turn], '') - this.emptyPromptTokens);
  }

  private countPromptTokens(history: readonly Turn[], text: string, system?: string): number {
    const chatHistory: ChatHistoryItem[] = [...this.toChatHistory(history, system), { type: 'user', text }, { type: 'model', response: [] }];
    const { contextText } = this.chatWrapper.generateContextState({ chatHistory });
    return contextText.tokenize(this.model.tokenizer).length;
  }

  private toChatHistory(history: readonly Turn[], system?: string): ChatHistoryItem[] {
    return [
      ...(system === undefined ? this.initialHistory : this.chatWrapper.generateInitialChatHistory({ systemPrompt: system })),
      ...history.map((turn): ChatHistoryItem => (turn.role === 'user' ? { type: 'user', text: turn.text } : { type: 'model', response: [turn.text] })),
    ];
  }
}

function modelName(model: LlamaModel, path: string): string {
  const name = model.fileInfo.metadata.general?.name;
  if (typeof name === 'string' && name.trim()) return name.trim();
  return path.split(/[\\/]/).pop() ?? path;
}
