import type { GgufWriter } from './gguf/GgufWriter.js';

/** llama.cpp token attributes, as stored in `tokenizer.ggml.token_type`. */
export const TokenType = {
  normal: 1,
  unknown: 2,
  control: 3,
  userDefined: 4,
  unused: 5,
  byte: 6,
} as const;
export type TokenType = (typeof TokenType)[keyof typeof TokenType];

/** SentencePiece marks a preceding space with U+2581. */
export const SPACE_MARK = '\u2581';
export const IM_START = '<|im_start|>';
export const IM_END = '<|im_end|>';

/**
 * ChatML, as Qwen and others ship it. node-llama-cpp recognises this template (together with
 * `<|im_start|>`/`<|im_end|>` control tokens) and resolves ChatMLChatWrapper for the model.
 */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const FIRST_PRINTABLE = 0x21;
const LAST_PRINTABLE = 0x7e;

/**
 * A SentencePiece-style `llama` vocabulary, laid out as llama.cpp expects:
 * `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0x00>`..`<0xFF>`, `▁`, the printable ASCII
 * characters, `▁word` pieces with every prefix (`▁t`, `▁th`, `▁the`), then the ChatML control
 * tokens. End of generation is `<|im_end|>`.
 *
 * Invariant: apart from single characters, every piece starts with `▁` and the set of pieces is
 * closed under prefixes. llama.cpp's SPM tokenizer only merges two symbols when the joined string
 * is a token, so under this invariant it turns a space-led word into its longest `▁` prefix in
 * the vocabulary followed by single characters; `tokenize` relies on the same fact.
 */
export class SpmVocab {
  readonly tokens: readonly string[];
  readonly scores: readonly number[];
  readonly types: readonly TokenType[];
  private readonly ids: ReadonlyMap<string, number>;

  private constructor(tokens: string[], scores: number[], types: TokenType[]) {
    this.tokens = tokens;
    this.scores = scores;
    this.types = types;
    const ids = new Map<string, number>();
    tokens.forEach((token, id) => {
      if (ids.has(token)) throw new RangeError(`duplicate token ${JSON.stringify(token)}`);
      ids.set(token, id);
    });
    this.ids = ids;
  }

  /** `words` are written without `▁` and may only use printable ASCII. Their order sets token ids. */
  static build(words: readonly string[]): SpmVocab {
    const tokens: string[] = [];
    const scores: number[] = [];
    const types: TokenType[] = [];
    const seen = new Set<string>();
    const add = (token: string, type: TokenType, score = 0): void => {
      if (seen.has(token)) return;
      seen.add(token);
      tokens.push(token);
      scores.push(score);
      types.push(type);
    };
    add('<unk>', TokenType.unknown);
    add('<s>', TokenType.control);
    add('</s>', TokenType.control);
    for (let byte = 0; byte < 256; byte++) add(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`, TokenType.byte);
    add(SPACE_MARK, TokenType.normal);
    for (let code = FIRST_PRINTABLE; code <= LAST_PRINTABLE; code++) add(String.fromCharCode(code), TokenType.normal);
    for (const word of words) {
      if (!/^[\x21-\x7e]+$/.test(word)) throw new RangeError(`word ${JSON.stringify(word)} must be non-empty printable ASCII`);
      for (let length = 1; length <= word.length; length++) {
        // Longer pieces score higher, so a merge that completes a word wins over a shorter one.
        add(SPACE_MARK + word.slice(0, length), TokenType.normal, -1 / (length + 1));
      }
    }
    add(IM_START, TokenType.control);
    add(IM_END, TokenType.control);
    return new SpmVocab(tokens, scores, types);
  }

  get size(): number {
    return this.tokens.length;
  }

  has(piece: string): boolean {
    return this.ids.has(piece);
  }

  id(piece: string): number {
    const id = this.ids.get(piece);
    if (id === undefined) throw new RangeError(`no token ${JSON.stringify(piece)}`);
    return id;
  }

  get unkId(): number { return this.id('<unk>'); }
  get bosId(): number { return this.id('<s>'); }
  get eosId(): number { return this.id(IM_END); }
  get imStartId(): number { return this.id(IM_START); }

  /** The byte token of a single byte value. */
  byteId(byte: number): number {
    return this.id(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`);
  }

  /**
   * Tokenizes plain text the way llama.cpp's SPM tokenizer does for this vocabulary (see the class
   * invariant): spaces become `▁` and attach to the word after them, a leading `▁` is added, and
   * characters outside the vocabulary fall back to their UTF-8 byte tokens. Control tokens in the
   * text are not recognised.
   */
  tokenize(text: string): number[] {
    const ids: number[] = [];
    const marked = SPACE_MARK + text.replaceAll(' ', SPACE_MARK);
    const characters = Array.from(marked);
    let index = 0;
    while (index < characters.length) {
      const character = characters[index]!;
      if (character === SPACE_MARK) {
        let piece = SPACE_MARK;
        let end = index + 1;
        while (end < characters.length && this.ids.has(piece + characters[end]!)) piece += characters[end++]!;
        ids.push(this.id(piece));
        index = end;
      } else if (this.ids.has(character)) {
        ids.push(this.id(character));
        index++;
      } else {
        for (const byte of Buffer.from(character, 'utf8')) ids.push(this.byteId(byte));
        index++;
      }
    }
    return ids;
  }

  /** Writes the `tokenizer.*` keys: model, tokens, scores, types, special ids and the ChatML template. */
  writeTo(writer: GgufWriter): void {
    writer
      .setString('tokenizer.ggml.model', 'llama')
      .setStringArray('tokenizer.ggml.tokens', this.tokens)
      .setFloat32Array('tokenizer.ggml.scores', this.scores)
      .setInt32Array('tokenizer.ggml.token_type', this.types)
      .setUint32('tokenizer.ggml.bos_token_id', this.bosId)
      .setUint32('tokenizer.ggml.eos_token_id', this.eosId)
      .setUint32('tokenizer.ggml.unknown_token_id', this.unkId)
      .setUint32('tokenizer.ggml.padding_token_id', this.unkId)
      .setBool('tokenizer.ggml.add_bos_token', true)
      .setBool('tokenizer.ggml.add_eos_token', false)
      .setString('tokenizer.chat_template', CHATML_TEMPLATE);
  }
}
