import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

/** A TTY input as far as password prompts need one. */
type PasswordInput = Readable & { isTTY?: boolean; setRawMode?: (mode: boolean) => unknown };

export class PasswordInputError extends Error {
  override name = 'PasswordInputError';
}

/**
 * A new password for `parley user add`. On a terminal it is typed twice with echo off; from a
 * pipe (`printf 'secret\n' | parley user add bob`) the first line is the password.
 */
export async function readNewPassword(input: PasswordInput, output: Writable): Promise<string> {
  if (!isTerminal(input)) return readLine(input);
  const first = await readHidden(input, output, 'Password: ');
  const second = await readHidden(input, output, 'Repeat password: ');
  if (first !== second) throw new PasswordInputError('The passwords do not match.');
  return first;
}

function isTerminal(input: PasswordInput): boolean {
  return input.isTTY === true && typeof input.setRawMode === 'function';
}

/** The first line of a piped input, without its line ending. */
function readLine(input: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input, terminal: false, crlfDelay: Infinity });
    let answered = false;
    lines.once('line', (line) => {
      answered = true;
      lines.close();
      resolve(line);
    });
    lines.once('close', () => {
      if (!answered) reject(new PasswordInputError('No password on standard input.'));
    });
    input.once('error', reject);
  });
}

/** Reads one line in raw mode, echoing nothing; Ctrl-C aborts. */
function readHidden(input: PasswordInput, output: Writable, prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    output.write(prompt);
    input.setRawMode?.(true);
    input.resume();
    let value = '';
    const finish = (error?: Error) => {
      input.off('data', onData);
      input.setRawMode?.(false);
      input.pause();
      output.write('\n');
      if (error) reject(error);
      else resolve(value);
    };
    const onData = (chunk: Buffer | string) => {
      for (const char of chunk.toString('utf8')) {
        if (char === '\r' || char === '\n' || char === '\u0004') return finish();
        if (char === '\u0003') return finish(new PasswordInputError('Cancelled.'));
        if (char === '\u007f' || char === '\b') value = Array.from(value).slice(0, -1).join('');
        else if (char >= ' ') value += char;
      }
    };
    input.on('data', onData);
  });
}
