import { randomBytes } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import { GGML_MAX_NAME, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgmlType, GgufValueType, alignUp } from './ggufFormat.js';
import { readGguf } from './readGguf.js';
import type { ReadGgufOptions } from './readGguf.js';

export type GgufWritableValue =
  | { readonly type: 'uint32' | 'int32' | 'float32'; readonly value: number }
  | { readonly type: 'uint64'; readonly value: bigint }
  | { readonly type: 'bool'; readonly value: boolean }
  | { readonly type: 'string'; readonly value: string }
  | { readonly type: 'array'; readonly itemType: 'string'; readonly value: readonly string[] }
  | { readonly type: 'array'; readonly itemType: 'uint32' | 'int32' | 'float32'; readonly value: ArrayLike<number> };

/** Tensor types the writer can encode. Quantized types are out of scope: see the field notes on Q8_0. */
export type GgufTensorType = 'F32' | 'F16';

interface PendingTensor {
  readonly name: string;
  readonly dims: readonly number[];
  readonly type: GgufTensorType;
  readonly data: Float32Array;
}

const F16_MAX = 65504;

/**
 * Builds a GGUF v3 file in memory: typed metadata, then F32/F16 tensors whose data is padded to
 * the alignment (32 bytes by default), exactly as llama.cpp's gguf.cpp lays a file out.
 *
 * `writeFile` never leaves a half-written or invalid file at the destination: it writes a
 * temporary sibling, validates it with readGguf, and only then renames it into place.
 */
export class GgufWriter {
  private readonly alignment: number;
  private readonly metadata = new Map<string, GgufWritableValue>();
  private readonly tensors: PendingTensor[] = [];

  constructor(options: { alignment?: number } = {}) {
    this.alignment = options.alignment ?? GGUF_DEFAULT_ALIGNMENT;
    if (this.alignment <= 0 || (this.alignment & (this.alignment - 1)) !== 0) {
      throw new RangeError(`alignment must be a power of 2, got ${this.alignment}`);
    }
    if (this.alignment !== GGUF_DEFAULT_ALIGNMENT) this.set('general.alignment', { type: 'uint32', value: this.alignment });
  }

  set(key: string, value: GgufWritableValue): this {
    if (key === '') throw new RangeError('metadata key must not be empty');
    if (this.metadata.has(key)) throw new RangeError(`metadata key '${key}' is already set`);
    this.metadata.set(key, value);
    return this;
  }

  setUint32(key: string, value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`${key}: ${value} is not a uint32`);
    return this.set(key, { type: 'uint32', value });
  }

  setInt32(key: string, value: number): this {
    if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) throw new RangeError(`${key}: ${value} is not an int32`);
    return this.set(key, { type: 'int32', value });
  }

  setFloat32(key: string, value: number): this {
    return this.set(key, { type: 'float32', value });
  }

  setBool(key: string, value: boolean): this {
    return this.set(key, { type: 'bool', value });
  }

  setString(key: string, value: string): this {
    return this.set(key, { type: 'string', value });
  }

  setStringArray(key: string, value: readonly string[]): this {
    return this.set(key, { type: 'array', itemType: 'string', value });
  }

  setFloat32Array(key: string, value: ArrayLike<number>): this {
    return this.set(key, { type: 'array', itemType: 'float32', value });
  }

  setInt32Array(key: string, value: ArrayLike<number>): this {
    return this.set(key, { type: 'array', itemType: 'int32', value });
  }

  /**
   * Adds a tensor. `dims` is in ggml order: dims[0] is the row length, so for a `[n_embd, n_vocab]`
   * matrix the data holds n_vocab rows of n_embd values, row after row.
   */
  addTensor(name: string, dims: readonly number[], type: GgufTensorType, data: Float32Array): this {
    if (Buffer.byteLength(name) >= GGML_MAX_NAME) throw new RangeError(`tensor name '${name}' is too long`);
    if (this.tensors.some((tensor) => tensor.name === name)) throw new RangeError(`tensor '${name}' is already added`);
    if (dims.length < 1 || dims.length > 4 || dims.some((dim) => !Number.isInteger(dim) || dim < 1)) {
      throw new RangeError(`tensor '${name}' has invalid dims [${dims.join(', ')}]`);
    }
    const elements = dims.reduce((product, dim) => product * dim, 1);
    if (elements !== data.length) throw new RangeError(`tensor '${name}' has ${data.length} values for dims [${dims.join(', ')}]`);
    const limit = type === 'F16' ? F16_MAX : Number.MAX_VALUE;
    for (let index = 0; index < data.length; index++) {
      const value = data[index]!;
      if (!Number.isFinite(value) || Math.abs(value) > limit) throw new RangeError(`tensor '${name}' value ${index} is ${value}, not representable in ${type}`);
    }
    this.tensors.push({ name, dims: [...dims], type, data });
    return this;
  }

  toBuffer(): Buffer {
    const header = new ByteSink();
    header.u32(GGUF_MAGIC);
    header.u32(GGUF_VERSION);
    header.u64(BigInt(this.tensors.length));
    header.u64(BigInt(this.metadata.size));
    for (const [key, value] of this.metadata) {
      header.string(key);
      writeValue(header, value);
    }
    let offset = 0;
    for (const tensor of this.tensors) {
      header.string(tensor.name);
      header.u32(tensor.dims.length);
      for (const dim of tensor.dims) header.u64(BigInt(dim));
      header.u32(GgmlType[tensor.type]);
      header.u64(BigInt(offset));
      offset += alignUp(tensorBytes(tensor), this.alignment);
    }
    const headerBytes = header.toBuffer();
    const dataOffset = alignUp(headerBytes.length, this.alignment);
    const file = Buffer.alloc(dataOffset + offset);
    headerBytes.copy(file, 0);
    let position = dataOffset;
    for (const tensor of this.tensors) {
      encodeTensor(tensor, file, position);
      position += alignUp(tensorBytes(tensor), this.alignment);
    }
    return file;
  }

  /**
   * Writes the file atomically: a temporary sibling is written, validated with the given checks
   * (`llama` by default) and renamed over `path`. Concurrent writers each rename a complete,
   * valid file, so a reader never sees a partial one.
   */
  async writeFile(path: string, options: { checks?: ReadGgufOptions['checks'] } = {}): Promise<{ path: string; size: number }> {
    const bytes = this.toBuffer();
    const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temporary, bytes);
      await readGguf(temporary, { checks: options.checks ?? 'llama' });
      await rename(temporary, path);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
    return { path, size: bytes.length };
  }
}

function tensorBytes(tensor: PendingTensor): number {
  return tensor.data.length * (tensor.type === 'F32' ? 4 : 2);
}

function encodeTensor(tensor: PendingTensor, target: Buffer, position: number): void {
  if (tensor.type === 'F32') {
    for (let index = 0; index < tensor.data.length; index++) target.writeFloatLE(tensor.data[index]!, position + index * 4);
  } else {
    for (let index = 0; index < tensor.data.length; index++) target.writeUInt16LE(float32ToFloat16Bits(tensor.data[index]!), position + index * 2);
  }
}

function writeValue(sink: ByteSink, value: GgufWritableValue): void {
  sink.u32(GgufValueType[value.type]);
  switch (value.type) {
    case 'uint32': sink.u32(value.value); break;
    case 'int32': sink.i32(value.value); break;
    case 'float32': sink.f32(value.value); break;
    case 'uint64': sink.u64(value.value); break;
    case 'bool': sink.u8(value.value ? 1 : 0); break;
    case 'string': sink.string(value.value); break;
    case 'array': {
      sink.u32(GgufValueType[value.itemType]);
      sink.u64(BigInt(value.value.length));
      if (value.itemType === 'string') {
        for (const item of value.value) sink.string(item);
      } else {
        const items = value.value;
        for (let index = 0; index < items.length; index++) {
          const item = items[index]!;
          if (value.itemType === 'float32') sink.f32(item);
          else if (value.itemType === 'int32') sink.i32(item);
          else sink.u32(item);
        }
      }
      break;
    }
  }
}

/** Appends little-endian values to a growing buffer. */
class ByteSink {
  private buffer = Buffer.alloc(1 << 16);
  private length = 0;

  private reserve(bytes: number): number {
    if (this.length + bytes > this.buffer.length) {
      const grown = Buffer.alloc(Math.max(this.buffer.length * 2, this.length + bytes));
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    const at = this.length;
    this.length += bytes;
    return at;
  }

  // reserve() may replace this.buffer, so it must run before this.buffer is read.
  u8(value: number): void { const at = this.reserve(1); this.buffer.writeUInt8(value, at); }
  u32(value: number): void { const at = this.reserve(4); this.buffer.writeUInt32LE(value, at); }
  i32(value: number): void { const at = this.reserve(4); this.buffer.writeInt32LE(value, at); }
  f32(value: number): void { const at = this.reserve(4); this.buffer.writeFloatLE(value, at); }
  u64(value: bigint): void { const at = this.reserve(8); this.buffer.writeBigUInt64LE(value, at); }

  string(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    this.u64(BigInt(bytes.length));
    const at = this.reserve(bytes.length);
    bytes.copy(this.buffer, at);
  }

  toBuffer(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE 754 binary16 bits of a finite float, rounded to nearest, ties to even. */
export function float32ToFloat16Bits(value: number): number {
  f32Scratch[0] = value;
  const bits = u32Scratch[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15;
  let mantissa = bits & 0x7fffff;
  if (exponent >= 0x1f) return sign | 0x7c00;
  if (exponent <= 0) {
    if (exponent < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - exponent;
    let half = mantissa >>> shift;
    const remainder = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (exponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && (half & 1) === 1)) half++;
  return sign | half;
}
