import { WebSocket, type ClientOptions } from 'ws';

/**
 * Opens a WebSocket with the given subprotocols and resolves with the HTTP status of a refused
 * upgrade (and its body), or 101 when the socket opened (it is then closed at once).
 */
export function upgradeStatus(wsUrl: string, protocols: string[], options: ClientOptions = {}): Promise<{ status: number; body: string; headers: Readonly<Record<string, string | string[] | undefined>> }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(wsUrl, protocols, options);
    socket.once('open', () => {
      socket.terminate();
      resolve({ status: 101, body: '', headers: {} });
    });
    socket.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    socket.once('error', (error) => {
      if (!String(error.message).startsWith('Unexpected server response')) reject(error);
    });
  });
}

/** The status alone, for a `parley.v1` + bearer offer. */
export async function bearerUpgradeStatus(wsUrl: string, token: string): Promise<number> {
  return (await upgradeStatus(wsUrl, ['parley.v1', `bearer.${token}`])).status;
}
