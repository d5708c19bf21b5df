import { CloseCode, ErrorCode } from '../../shared/errorCodes.js';
import { ParleyError } from '../ParleyError.js';

/**
 * A stored value failed to decrypt: its bytes were altered, it was moved from another row or
 * column, or the history key is not the one it was written with. Raised instead of returning
 * garbage text. `where` names the row and column for the server log; it never reaches a client.
 */
export class HistoryUnreadableError extends ParleyError {
  override name = 'HistoryUnreadableError';
  readonly where: string;

  constructor(where: string, cause?: unknown) {
    super(ErrorCode.historyUnreadable, 'Stored history could not be read.', { httpStatus: 500, closeCode: CloseCode.internalError, cause });
    this.where = where;
  }
}
