import { readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { GgufFile } from './GgufFile.js';
import type { GgufMetadataEntry, GgufScalar, GgufTensorInfo } from './GgufFile.js';
import {
  GGML_MAX_DIMS, GGML_MAX_NAME, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION,
  alignUp, ggmlTensorBytes, ggmlTypeName, ggufValueTypeName,
} from './ggufFormat.js';
import type { GgufScalarTypeName } from './ggufFormat.js';
import { GgufErrorCode, GgufValidationError } from './GgufValidationError.js';
import { validateLlamaGguf } from './validateLlamaGguf.js';

export interface ReadGgufOptions {
  /**
   * `structure` (default) checks what any GGUF must satisfy before llama.cpp may safely open it,
   * whatever its architecture or tensor types. `llama` adds the hyperparameter, tensor-shape and
   * vocabulary checks for the F32/F16 `llama` files that Parley generates.
   */
  checks?: 'structure' | 'llama';
}

/** Limits far above any real model; they stop a corrupt count from allocating gigabytes. */
const MAX_TENSORS = 1_000_000;
const MAX_KEYS = 1_000_000;
const FIRST_READ_BYTES = 1 << 20;
const TOKENS_KEY = 'tokenizer.ggml.tokens';

/**
 * Reads and validates the header of a GGUF file: metadata, tensor table and data layout.
 * Tensor data is never read, so this is cheap even for multi-gigabyte models.
 *
 * The structural checks mirror the ones in llama.cpp's gguf.cpp and model loader that end in a
 * refusal or in an abort: a file that passes them gets a logged error from llama.cpp at worst,
 * never a crash of the process. Throws GgufValidationError.
 */
export async function readGguf(path: string, options: ReadGgufOptions = {}): Promise<GgufFile> {
  const handle = await open(path, 'r');
  let file: GgufFile;
  try {
    const { size: fileSize } = await handle.stat();
    file = parseGgufHeader(new Cursor(handle.fd, fileSize, path), path);
  } finally {
    await handle.close();
  }
  if (options.checks === 'llama') validateLlamaGguf(file);
  return file;
}

/**
 * Reads little-endian values from the start of a file, pulling more of the file into memory as
 * the parser advances. Reads are synchronous because the parser is; only the header is read,
 * in chunks that double, so a header of tens of MB costs a handful of reads.
 */
class Cursor {
  position = 0;
  private buffer: Buffer = Buffer.alloc(0);

  constructor(private readonly fd: number, readonly fileSize: number, private readonly path: string) {}

  private take(length: number, what: string): number {
    const start = this.position;
    const end = start + length;
    if (end > this.fileSize) {
      throw new GgufValidationError(GgufErrorCode.truncated,
        `file ends at byte ${this.fileSize} while reading ${what} (${length} bytes at byte ${start})`, { path: this.path });
    }
    if (end > this.buffer.length) this.grow(end);
    this.position = end;
    return start;
  }

  private grow(end: number): void {
    const size = Math.min(this.fileSize, Math.max(end, FIRST_READ_BYTES, this.buffer.length * 2));
    const grown = Buffer.allocUnsafe(size);
    this.buffer.copy(grown, 0);
    let filled = this.buffer.length;
    while (filled < size) {
      const bytesRead = readSync(this.fd, grown, filled, size - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    this.buffer = grown.subarray(0, filled);
    if (filled < end) {
      throw new GgufValidationError(GgufErrorCode.truncated, `file shrank to ${filled} bytes while being read`, { path: this.path });
    }
  }

  // take() may replace this.buffer, so it must run before this.buffer is read.
  u8(what: string): number { const at = this.take(1, what); return this.buffer.readUInt8(at); }
  i8(what: string): number { const at = this.take(1, what); return this.buffer.readInt8(at); }
  u16(what: string): number { const at = this.take(2, what); return this.buffer.readUInt16LE(at); }
  i16(what: string): number { const at = this.take(2, what); return this.buffer.readInt16LE(at); }
  u32(what: string): number { const at = this.take(4, what); return this.buffer.readUInt32LE(at); }
  i32(what: string): number { const at = this.take(4, what); return this.buffer.readInt32LE(at); }
  f32(what: string): number { const at = this.take(4, what); return this.buffer.readFloatLE(at); }
  f64(what: string): number { const at = this.take(8, what); return this.buffer.readDoubleLE(at); }
  u64(what: string): bigint { const at = this.take(8, what); return this.buffer.readBigUInt64LE(at); }
  i64(what: string): bigint { const at = this.take(8, what); return this.buffer.readBigInt64LE(at); }

  /** A uint64 count or length that must fit in the file: anything larger means a truncated or corrupt file. */
  length(what: string, limit: number): number {
    const at = this.take(8, what);
    // Two uint32 halves instead of a BigInt: this runs once per string, hundreds of thousands of times.
    const value = this.buffer.readUInt32LE(at + 4) * 0x1_0000_0000 + this.buffer.readUInt32LE(at);
    if (value > limit) {
      throw new GgufValidationError(GgufErrorCode.truncated,
        `${what} at byte ${at} is ${this.buffer.readBigUInt64LE(at)}, more than the ${limit} the file can hold`, { path: this.path });
    }
    return value;
  }

  /** `length` raw bytes; a view into the buffer, valid until the next read. */
  bytes(length: number, what: string): Buffer {
    const start = this.take(length, what);
    return this.buffer.subarray(start, start + length);
  }

  /**
   * A length-prefixed UTF-8 string. Invalid sequences become U+FFFD and a leading U+FEFF is kept
   * (real vocabularies have tokens that differ only by it). With `identity`, also returns the raw
   * bytes as a latin1 string, which tells apart strings that decode alike.
   */
  string(what: string): string;
  string(what: string, identity: true): [text: string, raw: string];
  string(what: string, identity = false): string | [string, string] {
    const length = this.length(what, this.fileSize);
    const start = this.take(length, what);
    const text = this.buffer.toString('utf8', start, start + length);
    return identity ? [text, this.buffer.toString('latin1', start, start + length)] : text;
  }
}

function parseGgufHeader(cursor: Cursor, path: string): GgufFile {
  function fail(code: GgufErrorCode, message: string): never {
    throw new GgufValidationError(code, message, { path });
  }
  const fileSize = cursor.fileSize;

  if (fileSize < 4) fail(GgufErrorCode.truncated, `file is ${fileSize} bytes, too short for the GGUF magic`);
  const magic = cursor.bytes(4, 'magic');
  if (magic.readUInt32LE(0) !== GGUF_MAGIC) {
    const shown = magic.toString('latin1').replace(/[^\x20-\x7e]/g, '?');
    fail(GgufErrorCode.badMagic, `not a GGUF file: magic is '${shown}', expected 'GGUF'`);
  }
  const version = cursor.u32('version');
  if (version === 0 || (version & 0xffff) === 0) fail(GgufErrorCode.badVersion, `bad GGUF version ${version} (wrong endianness?)`);
  if (version === 1) fail(GgufErrorCode.badVersion, 'GGUF version 1 is no longer supported by llama.cpp');
  if (version > GGUF_VERSION) fail(GgufErrorCode.badVersion, `GGUF version ${version} is newer than the supported ${GGUF_VERSION}`);

  const tensorCount = cursor.length('tensor count', MAX_TENSORS);
  const keyCount = cursor.length('metadata key count', MAX_KEYS);

  const metadata = new Map<string, GgufMetadataEntry>();
  for (let index = 0; index < keyCount; index++) {
    const key = cursor.string(`key ${index}`);
    if (key === '') fail(GgufErrorCode.badHeader, `metadata key ${index} is empty`);
    if (metadata.has(key)) fail(GgufErrorCode.duplicateKey, `duplicate metadata key '${key}'`);
    const typeId = cursor.u32(`type of key '${key}'`);
    const type = ggufValueTypeName(typeId);
    if (type === undefined) fail(GgufErrorCode.badHeader, `key '${key}' has invalid GGUF type ${typeId}`);
    if (type === 'array') {
      const itemTypeId = cursor.u32(`item type of key '${key}'`);
      const itemType = ggufValueTypeName(itemTypeId);
      if (itemType === undefined || itemType === 'array') {
        fail(GgufErrorCode.badHeader, `key '${key}' is an array of invalid GGUF type ${itemTypeId}`);
      }
      // Every item takes at least one byte, so a count above the file size is corrupt.
      const count = cursor.length(`item count of key '${key}'`, fileSize);
      const items: GgufScalar[] = new Array<GgufScalar>(count);
      // One description for all items: building one per item would dominate the parse time.
      const what = `an item of key '${key}'`;
      if (key === TOKENS_KEY && itemType === 'string') {
        // A vocabulary with a repeated string makes llama.cpp abort the process
        // (id_to_token.size() == token_to_id.size()). Compare bytes: distinct invalid UTF-8
        // sequences decode to the same replacement character.
        const seen = new Map<string, number>();
        for (let item = 0; item < count; item++) {
          const [token, identity] = cursor.string(what, true);
          const first = seen.get(identity);
          if (first !== undefined) fail(GgufErrorCode.duplicateToken, `token ${item} repeats the string ${JSON.stringify(token)} of token ${first}`);
          seen.set(identity, item);
          items[item] = token;
        }
      } else {
        for (let item = 0; item < count; item++) items[item] = readScalar(cursor, itemType as GgufScalarTypeName, what);
      }
      metadata.set(key, { type: 'array', itemType: itemType as GgufScalarTypeName, value: items });
    } else {
      metadata.set(key, { type: type as GgufScalarTypeName, value: readScalar(cursor, type as GgufScalarTypeName, `value of key '${key}'`) });
    }
  }

  const alignmentEntry = metadata.get('general.alignment');
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (alignmentEntry !== undefined) {
    if (alignmentEntry.type !== 'uint32') fail(GgufErrorCode.badKeyType, `key 'general.alignment' must be a uint32 but is ${alignmentEntry.type}`);
    alignment = alignmentEntry.value as number;
    if (alignment === 0 || (alignment & (alignment - 1)) !== 0) fail(GgufErrorCode.badHeader, `alignment ${alignment} is not a power of 2`);
  }

  const tensors: GgufTensorInfo[] = [];
  const tensorNames = new Set<string>();
  for (let index = 0; index < tensorCount; index++) {
    const name = cursor.string(`name of tensor ${index}`);
    if (Buffer.byteLength(name) >= GGML_MAX_NAME) fail(GgufErrorCode.badHeader, `tensor name '${name}' is ${Buffer.byteLength(name)} bytes; the limit is ${GGML_MAX_NAME - 1}`);
    if (tensorNames.has(name)) fail(GgufErrorCode.duplicateTensor, `duplicate tensor name '${name}'`);
    tensorNames.add(name);
    const dimCount = cursor.u32(`dimension count of tensor '${name}'`);
    if (dimCount > GGML_MAX_DIMS) fail(GgufErrorCode.badHeader, `tensor '${name}' has ${dimCount} dimensions; the limit is ${GGML_MAX_DIMS}`);
    const dims: number[] = [];
    for (let dim = 0; dim < dimCount; dim++) {
      const value = cursor.i64(`dimension ${dim} of tensor '${name}'`);
      if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) fail(GgufErrorCode.badHeader, `tensor '${name}' dimension ${dim} is ${value}`);
      dims.push(Number(value));
    }
    const elements = dims.reduce((product, dim) => product * dim, 1);
    if (!Number.isSafeInteger(elements)) fail(GgufErrorCode.badHeader, `tensor '${name}' has too many elements (${dims.join(' x ')})`);
    const typeId = cursor.u32(`type of tensor '${name}'`);
    const type = ggmlTypeName(typeId);
    if (type === undefined) fail(GgufErrorCode.badTensorType, `tensor '${name}' has unknown ggml type ${typeId}`);
    const byteLength = ggmlTensorBytes(type!, dims);
    if (byteLength === undefined) fail(GgufErrorCode.badTensorShape, `tensor '${name}' of type ${type} has rows of ${dims[0]} elements, not a whole number of blocks`);
    const offset = cursor.u64(`offset of tensor '${name}'`);
    if (offset > BigInt(fileSize)) fail(GgufErrorCode.badTensorOffset, `tensor '${name}' has offset ${offset}, beyond the end of the ${fileSize}-byte file`);
    tensors.push({ name, dims, type: type!, offset: Number(offset), byteLength: byteLength! });
  }

  const dataOffset = tensorCount > 0 ? alignUp(cursor.position, alignment) : cursor.position;
  // llama.cpp requires the tensors in file order, each starting where the previous one's padding ends.
  let dataSize = 0;
  for (const tensor of tensors) {
    if (tensor.offset !== dataSize) {
      fail(GgufErrorCode.badTensorOffset, `tensor '${tensor.name}' has offset ${tensor.offset}, expected ${dataSize} (tensors must be contiguous and ${alignment}-byte aligned)`);
    }
    const end = dataOffset + tensor.offset + tensor.byteLength;
    if (end > fileSize) {
      fail(GgufErrorCode.truncated, `data of tensor '${tensor.name}' ends at byte ${end}, beyond the end of the ${fileSize}-byte file`);
    }
    dataSize += alignUp(tensor.byteLength, alignment);
  }

  const tokens = metadata.get(TOKENS_KEY);
  if (tokens !== undefined && (tokens.type !== 'array' || tokens.itemType !== 'string')) {
    fail(GgufErrorCode.badKeyType, `key '${TOKENS_KEY}' must be an array of strings`);
  }

  return new GgufFile(path, version, alignment, metadata, tensors, dataOffset, dataSize, fileSize);
}

function readScalar(cursor: Cursor, type: GgufScalarTypeName, what: string): GgufScalar {
  switch (type) {
    case 'uint8': return cursor.u8(what);
    case 'int8': return cursor.i8(what);
    case 'uint16': return cursor.u16(what);
    case 'int16': return cursor.i16(what);
    case 'uint32': return cursor.u32(what);
    case 'int32': return cursor.i32(what);
    case 'float32': return cursor.f32(what);
    case 'float64': return cursor.f64(what);
    case 'bool': return cursor.u8(what) !== 0;
    case 'uint64': return cursor.u64(what);
    case 'int64': return cursor.i64(what);
    case 'string': return cursor.string(what);
  }
}
