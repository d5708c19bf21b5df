import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * Paths that may hold secrets. Parley never logs them on purpose; redaction is the second line
 * of defence should a header or body ever be attached to a log record.
 */
export const redactPaths = [
  'token',
  '*.token',
  'invite',
  '*.invite',
  'password',
  '*.password',
  'text',
  '*.text',
  'headers.authorization',
  'headers.cookie',
  'headers["set-cookie"]',
  'cookie',
  '*.cookie',
  'headers["sec-websocket-protocol"]',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["sec-websocket-protocol"]',
];

/** The root logger. Pass a destination in tests to capture and inspect every record. */
export function createLogger(options: { level: string; destination?: DestinationStream }): Logger {
  return pino(
    {
      level: options.level,
      base: { app: 'parley' },
      redact: { paths: redactPaths, censor: '[redacted]' },
    },
    options.destination,
  );
}
