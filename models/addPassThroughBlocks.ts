import type { GgufWriter } from './gguf/GgufWriter.js';

export interface PassThroughBlockShape {
  readonly blocks: number;
  readonly embd: number;
  /** Width of the query projection (heads × head size). */
  readonly qDim: number;
  /** Width of the key and value projections (KV heads × head size). */
  readonly kvDim: number;
  readonly ffn: number;
  /** Small random weights; called in a fixed order so the same seed gives the same file. */
  readonly noise: (length: number) => Float32Array;
}

/**
 * Adds transformer blocks whose attention and FFN output weights are zero, so the residual
 * stream carries the token embedding through unchanged (the field notes' trick for readable
 * text without training). The other weights are noise only to look like a real model.
 */
export function addPassThroughBlocks(writer: GgufWriter, shape: PassThroughBlockShape): void {
  const { embd, qDim, kvDim, ffn, noise } = shape;
  for (let block = 0; block < shape.blocks; block++) {
    const prefix = `blk.${block}.`;
    writer.addTensor(`${prefix}attn_norm.weight`, [embd], 'F32', new Float32Array(embd).fill(1));
    writer.addTensor(`${prefix}attn_q.weight`, [embd, qDim], 'F16', noise(embd * qDim));
    writer.addTensor(`${prefix}attn_k.weight`, [embd, kvDim], 'F16', noise(embd * kvDim));
    writer.addTensor(`${prefix}attn_v.weight`, [embd, kvDim], 'F16', noise(embd * kvDim));
    writer.addTensor(`${prefix}attn_output.weight`, [qDim, embd], 'F16', new Float32Array(qDim * embd));
    writer.addTensor(`${prefix}ffn_norm.weight`, [embd], 'F32', new Float32Array(embd).fill(1));
    writer.addTensor(`${prefix}ffn_gate.weight`, [embd, ffn], 'F16', noise(embd * ffn));
    writer.addTensor(`${prefix}ffn_up.weight`, [embd, ffn], 'F16', noise(embd * ffn));
    writer.addTensor(`${prefix}ffn_down.weight`, [ffn, embd], 'F16', new Float32Array(ffn * embd));
  }
}
