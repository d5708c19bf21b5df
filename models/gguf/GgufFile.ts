import type { GgmlTypeName, GgufScalarTypeName } from './ggufFormat.js';
import { GgufErrorCode, GgufValidationError } from './GgufValidationError.js';

/** uint64 and int64 values are bigint; every other number is a JS number. */
export type GgufScalar = number | bigint | boolean | string;

export type GgufMetadataEntry =
  | { readonly type: GgufScalarTypeName; readonly value: GgufScalar }
  | { readonly type: 'array'; readonly itemType: GgufScalarTypeName; readonly value: readonly GgufScalar[] };

export interface GgufTensorInfo {
  readonly name: string;
  /** ggml order: dims[0] is the length of a row (the innermost, contiguous dimension). */
  readonly dims: readonly number[];
  readonly type: GgmlTypeName;
  /** Offset from the start of the data section. */
  readonly offset: number;
  /** Bytes of tensor data, without the padding that follows it. */
  readonly byteLength: number;
}

const integerTypes: ReadonlySet<GgufScalarTypeName> = new Set(['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'uint64', 'int64']);

/** The parsed header of a GGUF file: metadata, tensor table and data layout. Tensor data is not loaded. */
export class GgufFile {
  constructor(
    readonly path: string,
    readonly version: number,
    readonly alignment: number,
    readonly metadata: ReadonlyMap<string, GgufMetadataEntry>,
    readonly tensors: readonly GgufTensorInfo[],
    /** Absolute file offset where tensor data starts; a multiple of `alignment`. */
    readonly dataOffset: number,
    /** Bytes of the data section as llama.cpp counts it: every tensor padded to `alignment`. */
    readonly dataSize: number,
    readonly fileSize: number,
  ) {}

  has(key: string): boolean {
    return this.metadata.has(key);
  }

  /** A string value, or undefined when absent. Throws when present with another type. */
  string(key: string): string | undefined {
    const entry = this.metadata.get(key);
    if (entry === undefined) return undefined;
    if (entry.type !== 'string') throw this.typeError(key, 'a string', entry);
    return entry.value as string;
  }

  /** An integer value of any integer type, as a safe JS number, or undefined when absent. */
  integer(key: string): number | undefined {
    const entry = this.metadata.get(key);
    if (entry === undefined) return undefined;
    if (entry.type === 'array' || !integerTypes.has(entry.type)) throw this.typeError(key, 'an integer', entry);
    const value = Number(entry.value);
    if (!Number.isSafeInteger(value)) throw this.typeError(key, 'an integer below 2^53', entry);
    return value;
  }

  /** A float32 or float64 value, or undefined when absent. */
  float(key: string): number | undefined {
    const entry = this.metadata.get(key);
    if (entry === undefined) return undefined;
    if (entry.type !== 'float32' && entry.type !== 'float64') throw this.typeError(key, 'a float', entry);
    return entry.value as number;
  }

  bool(key: string): boolean | undefined {
    const entry = this.metadata.get(key);
    if (entry === undefined) return undefined;
    if (entry.type !== 'bool') throw this.typeError(key, 'a bool', entry);
    return entry.value as boolean;
  }

  /** An array whose items have `itemType`, or undefined when absent. */
  array(key: string, itemType: 'string'): readonly string[] | undefined;
  array(key: string, itemType: 'float32' | 'int32' | 'uint32'): readonly number[] | undefined;
  array(key: string, itemType: GgufScalarTypeName): readonly GgufScalar[] | undefined {
    const entry = this.metadata.get(key);
    if (entry === undefined) return undefined;
    if (entry.type !== 'array' || entry.itemType !== itemType) throw this.typeError(key, `an array of ${itemType}`, entry);
    return entry.value;
  }

  tensor(name: string): GgufTensorInfo | undefined {
    return this.tensors.find((tensor) => tensor.name === name);
  }

  private typeError(key: string, expected: string, entry: GgufMetadataEntry): GgufValidationError {
    const actual = entry.type === 'array' ? `an array of ${entry.itemType}` : `a ${entry.type}`;
    return new GgufValidationError(GgufErrorCode.badKeyType, `key '${key}' must be ${expected} but is ${actual}`, { path: this.path });
  }
}
