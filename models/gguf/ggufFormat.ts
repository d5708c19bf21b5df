/**
 * Constants of the GGUF container format, as llama.cpp's `gguf.cpp` reads it.
 * All integers in a GGUF file are little-endian.
 */

/** "GGUF" read as a little-endian uint32. */
export const GGUF_MAGIC = 0x46554747;
/** The version Parley writes. llama.cpp reads versions 2 and 3; version 1 is rejected. */
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** llama.cpp rejects tensor names of GGML_MAX_NAME (64) bytes or more. */
export const GGML_MAX_NAME = 64;
export const GGML_MAX_DIMS = 4;

/** Type tags of metadata values. */
export const GgufValueType = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;
export type GgufValueTypeName = keyof typeof GgufValueType;
export type GgufScalarTypeName = Exclude<GgufValueTypeName, 'array'>;

const valueTypeNames = new Map<number, GgufValueTypeName>(
  Object.entries(GgufValueType).map(([name, id]) => [id, name as GgufValueTypeName]),
);

export function ggufValueTypeName(id: number): GgufValueTypeName | undefined {
  return valueTypeNames.get(id);
}

/** Tensor element types, numbered as in ggml.h. Gaps are types whose support was removed. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ2_XXS: 16,
  IQ2_XS: 17,
  IQ3_XXS: 18,
  IQ1_S: 19,
  IQ4_NL: 20,
  IQ3_S: 21,
  IQ2_S: 22,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  IQ1_M: 29,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  MXFP4: 39,
  NVFP4: 40,
  Q1_0: 41,
  Q2_0: 42,
} as const;
export type GgmlTypeName = keyof typeof GgmlType;

/**
 * Elements per block and bytes per block of each type, from ggml's type_traits and the
 * `sizeof(block_*)` of the llama.cpp build that node-llama-cpp 3.22.1 bundles.
 * A row's element count must be a multiple of the block size.
 */
const ggmlTypeLayouts: Readonly<Record<GgmlTypeName, { blockSize: number; typeSize: number }>> = {
  F32: { blockSize: 1, typeSize: 4 },
  F16: { blockSize: 1, typeSize: 2 },
  Q4_0: { blockSize: 32, typeSize: 18 },
  Q4_1: { blockSize: 32, typeSize: 20 },
  Q5_0: { blockSize: 32, typeSize: 22 },
  Q5_1: { blockSize: 32, typeSize: 24 },
  Q8_0: { blockSize: 32, typeSize: 34 },
  Q8_1: { blockSize: 32, typeSize: 36 },
  Q2_K: { blockSize: 256, typeSize: 84 },
  Q3_K: { blockSize: 256, typeSize: 110 },
  Q4_K: { blockSize: 256, typeSize: 144 },
  Q5_K: { blockSize: 256, typeSize: 176 },
  Q6_K: { blockSize: 256, typeSize: 210 },
  Q8_K: { blockSize: 256, typeSize: 292 },
  IQ2_XXS: { blockSize: 256, typeSize: 66 },
  IQ2_XS: { blockSize: 256, typeSize: 74 },
  IQ3_XXS: { blockSize: 256, typeSize: 98 },
  IQ1_S: { blockSize: 256, typeSize: 50 },
  IQ4_NL: { blockSize: 32, typeSize: 18 },
  IQ3_S: { blockSize: 256, typeSize: 110 },
  IQ2_S: { blockSize: 256, typeSize: 82 },
  IQ4_XS: { blockSize: 256, typeSize: 136 },
  I8: { blockSize: 1, typeSize: 1 },
  I16: { blockSize: 1, typeSize: 2 },
  I32: { blockSize: 1, typeSize: 4 },
  I64: { blockSize: 1, typeSize: 8 },
  F64: { blockSize: 1, typeSize: 8 },
  IQ1_M: { blockSize: 256, typeSize: 56 },
  BF16: { blockSize: 1, typeSize: 2 },
  TQ1_0: { blockSize: 256, typeSize: 54 },
  TQ2_0: { blockSize: 256, typeSize: 66 },
  MXFP4: { blockSize: 32, typeSize: 17 },
  NVFP4: { blockSize: 64, typeSize: 36 },
  Q1_0: { blockSize: 128, typeSize: 18 },
  Q2_0: { blockSize: 64, typeSize: 18 },
};

const ggmlTypeNames = new Map<number, GgmlTypeName>(
  Object.entries(GgmlType).map(([name, id]) => [id, name as GgmlTypeName]),
);

export function ggmlTypeName(id: number): GgmlTypeName | undefined {
  return ggmlTypeNames.get(id);
}

export function ggmlTypeLayout(name: GgmlTypeName): { blockSize: number; typeSize: number } {
  return ggmlTypeLayouts[name];
}

/** Bytes a tensor occupies, before padding; undefined when the row is not a whole number of blocks. */
export function ggmlTensorBytes(name: GgmlTypeName, dims: readonly number[]): number | undefined {
  const { blockSize, typeSize } = ggmlTypeLayouts[name];
  const rowLength = dims[0] ?? 1;
  if (rowLength % blockSize !== 0) return undefined;
  const elements = dims.reduce((product, dim) => product * dim, 1);
  return (elements / blockSize) * typeSize;
}

export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
