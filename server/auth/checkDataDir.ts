import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { API_KEYS_FILE } from './ApiKeyStore.js';
import { INVITE_FILE, ROTATED_PIN_FILE } from './loadOrCreateInvite.js';
import { BLOCKS_FILE } from './SignInBlocks.js';
import { SIGNING_KEY_FILE } from './loadOrCreateSigningKey.js';
import { SESSIONS_FILE } from './SessionStore.js';
import { USERS_FILE } from './UserStore.js';
import { HISTORY_KEY_FILE } from '../history/loadOrCreateHistoryKey.js';
import { HISTORY_FILE } from '../history/SqliteConversationRepository.js';

/** The data dir, or a secret in it, can be changed by another user of this machine: Parley refuses to start. */
export class DataDirPermissionError extends Error {
  override name = 'DataDirPermissionError';
  readonly code = 'invalid_config' as const;
}

/** Every file in the data dir that holds a secret or private data. */
const SECRET_FILES = [SIGNING_KEY_FILE, INVITE_FILE, ROTATED_PIN_FILE, BLOCKS_FILE, USERS_FILE, SESSIONS_FILE, API_KEYS_FILE, HISTORY_KEY_FILE, HISTORY_FILE, `${HISTORY_FILE}-wal`, `${HISTORY_FILE}-shm`];

/**
 * Checks the data dir and every secret file in it (and `extraFiles`, such as a history key kept
 * elsewhere) before anything reads them. Throws DataDirPermissionError when another user can
 * write to one (its group or others have write permission, or another user owns it): they could
 * swap the signing key, the invite or an account's password hash. Returns a warning for each one
 * that another user can read. Missing paths are fine (a first start creates them, mode 0600 in a
 * 0700 dir). Windows has no such mode bits, so nothing is checked there.
 */
export async function checkDataDir(dataDir: string, extraFiles: readonly string[] = [], platform: NodeJS.Platform = process.platform): Promise<{ readonly warnings: readonly string[] }> {
  if (platform === 'win32') return { warnings: [] };
  const uid = process.getuid?.();
  const warnings: string[] = [];
  const paths = [{ path: dataDir, dir: true }, ...[...SECRET_FILES.map((name) => join(dataDir, name)), ...extraFiles].map((path) => ({ path, dir: false }))];
  for (const { path, dir } of paths) {
    let info;
    try {
      info = await stat(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    const mode = info.mode & 0o777;
    const fix = `chmod ${dir ? '700' : '600'} ${path}`;
    if ((mode & 0o022) !== 0) {
      throw new DataDirPermissionError(`${path} can be changed by other users of this machine (mode ${mode.toString(8)}); run: ${fix}`);
    }
    if (uid !== undefined && info.uid !== uid) {
      throw new DataDirPermissionError(`${path} belongs to another user (uid ${info.uid}), who can change it; move it aside or run Parley as that user`);
    }
    if ((mode & 0o044) !== 0) warnings.push(`${path} can be read by other users of this machine (mode ${mode.toString(8)}); run: ${fix}`);
  }
  return { warnings };
}
