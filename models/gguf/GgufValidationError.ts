/**
 * Why a GGUF file was rejected. Each code names one class of defect, so callers and tests can
 * tell them apart without matching on message text.
 */
export const GgufErrorCode = {
  /** The file ends before a structure it announces (header, string, array, tensor data). */
  truncated: 'gguf_truncated',
  badMagic: 'gguf_bad_magic',
  badVersion: 'gguf_bad_version',
  /** A count, length, type tag or dimension that llama.cpp would refuse or could not represent. */
  badHeader: 'gguf_bad_header',
  duplicateKey: 'gguf_duplicate_key',
  missingKey: 'gguf_missing_key',
  badKeyType: 'gguf_bad_key_type',
  badHyperparameter: 'gguf_bad_hyperparameter',
  duplicateTensor: 'gguf_duplicate_tensor',
  missingTensor: 'gguf_missing_tensor',
  unexpectedTensor: 'gguf_unexpected_tensor',
  badTensorShape: 'gguf_bad_tensor_shape',
  badTensorType: 'gguf_bad_tensor_type',
  badTensorOffset: 'gguf_bad_tensor_offset',
  fileSizeMismatch: 'gguf_file_size_mismatch',
  duplicateToken: 'gguf_duplicate_token',
  badVocabulary: 'gguf_bad_vocabulary',
  badTokenId: 'gguf_bad_token_id',
} as const;
export type GgufErrorCode = (typeof GgufErrorCode)[keyof typeof GgufErrorCode];

export class GgufValidationError extends Error {
  override name = 'GgufValidationError';
  readonly code: GgufErrorCode;
  /** The file that was checked, when the check ran on a file. */
  readonly path: string | undefined;

  constructor(code: GgufErrorCode, message: string, options: { path?: string; cause?: unknown } = {}) {
    super(options.path === undefined ? message : `${options.path}: ${message}`,
      options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.path = options.path;
  }
}
