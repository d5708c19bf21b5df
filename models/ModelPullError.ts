/** Why a model could not be pulled. */
export const ModelPullErrorCode = {
  /** The URI is neither http(s) nor a Hugging Face `hf:` URI, or cannot be parsed. */
  invalidUri: 'model_pull_invalid_uri',
  /** The server answered with an HTTP error status (see `status`). */
  http: 'model_pull_http_error',
  /** The connection failed: host unreachable, refused, reset or timed out. */
  network: 'model_pull_network_error',
  /** The download finished but the file is not a valid GGUF model; it has been deleted. */
  notGguf: 'model_pull_not_gguf',
  /** The caller's signal aborted the pull; the partial file has been deleted. */
  cancelled: 'model_pull_cancelled',
  failed: 'model_pull_failed',
} as const;
export type ModelPullErrorCode = (typeof ModelPullErrorCode)[keyof typeof ModelPullErrorCode];

export class ModelPullError extends Error {
  override name = 'ModelPullError';
  readonly code: ModelPullErrorCode;
  readonly uri: string;
  /** HTTP status, when the server sent one. */
  readonly status: number | undefined;

  constructor(code: ModelPullErrorCode, uri: string, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.uri = uri;
    this.status = options.status;
  }
}
