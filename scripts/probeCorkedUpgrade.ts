import { connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { loadUws } from '../server/transport/loadUws.js';

/**
 * Does the uWS binary that loads here have the fix for the corked async upgrade (uWebSockets
 * PR #1929)? `npx tsx scripts/probeCorkedUpgrade.ts [connections] [--sync|--uncorked|--keep-alive]`
 * (on Debian 12 with Node 20 it probes v20.30; `npm run test:platforms -- probe` runs it in Debian 13, v20.57).
 *
 * The bug: after `await`, `res.cork(() => res.upgrade(...))` upgrades in place (realloc keeps the
 * address), so cork() goes on to read HttpResponseData::state from memory that now holds the
 * WebSocket, and closes it when that reads "Connection: close". The PR's reproduction makes it
 * deterministic by sending `Connection: close` with the upgrade: the flag is then really set in the
 * state. A binary with the bug closes every such socket right after `open` (the client sees the
 * 101 and the first frame, then a FIN and no close frame); a fixed one keeps them open.
 * Controls: `--sync` upgrades inside the upgrade handler (no await); `--uncorked` upgrades outside
 * cork; `--keep-alive` sends `Connection: Upgrade`. Measured: v20.30 (Node 20, Debian 12) and
 * v20.57 (Node 24, Debian 13) both close 19-20 of 20 async upgrades with `Connection: close`,
 * corked or not, and none of the synchronous ones nor of the `Connection: Upgrade` ones.
 * Exit status: 0 when no socket died (fixed), 1 when some did (the bug), 2 when no uWS loads.
 */
const args = process.argv.slice(2);
const uncorked = args.includes('--uncorked');
const sync = args.includes('--sync');
const connectionHeader = args.includes('--keep-alive') ? 'Upgrade' : 'close';
const connections = Number(args.find((arg) => /^\d+$/.test(arg)) ?? 20);
const uwsLoad = loadUws();
if (!uwsLoad.native) {
  console.error(`no native uWS here: ${uwsLoad.reason}`);
  process.exit(2);
}
const uws = uwsLoad.uws;
uws._cfg('silent');
const app = uws.App();
app.ws('/*', {
  upgrade: (res, req, context) => {
    const key = req.getHeader('sec-websocket-key');
    const protocol = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    if (sync) return res.upgrade({}, key, protocol, extensions, context);
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    void delay(1).then(() => {
      if (aborted) return;
      if (uncorked) res.upgrade({}, key, protocol, extensions, context);
      else res.cork(() => res.upgrade({}, key, protocol, extensions, context));
    });
  },
  open: (ws) => {
    ws.send('hello');
  },
});
const listenSocket = await new Promise<import('@trufflesuite/uws-js-unofficial').us_listen_socket>((resolve, reject) => {
  app.listen('127.0.0.1', 0, (socket) => (socket ? resolve(socket) : reject(new Error('listen failed'))));
});
const port = uws.us_socket_local_port(listenSocket);

/** 'open' when the socket still stands 300 ms after its first frame; 'closed' when the server ended it first. */
function probe(): Promise<'open' | 'closed' | 'refused'> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    let timer: NodeJS.Timeout | undefined;
    const finish = (outcome: 'open' | 'closed' | 'refused') => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    socket.on('connect', () => {
      socket.write(
        `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: ${connectionHeader}\r\n` +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      if (!received.startsWith('HTTP/1.1 101')) return finish('refused');
      if (received.includes('hello') && timer === undefined) timer = setTimeout(() => finish('open'), 300);
    });
    socket.on('end', () => finish(received.startsWith('HTTP/1.1 101') ? 'closed' : 'refused'));
    socket.on('error', () => finish('closed'));
  });
}

const outcomes = { open: 0, closed: 0, refused: 0 };
for (let i = 0; i < connections; i++) outcomes[await probe()] += 1;
uws.us_listen_socket_close(listenSocket);
console.log(`uWS v${uwsLoad.version} (${uwsLoad.binary}), Node ${process.versions.node}: ${connections} ${sync ? 'synchronous' : uncorked ? 'uncorked async' : 'corked async'} upgrades with Connection: ${connectionHeader}: ${outcomes.open} stayed open, ${outcomes.closed} closed by the server after open, ${outcomes.refused} refused`);
if (!uncorked && !sync && connectionHeader === 'close') console.log(outcomes.closed > 0 ? 'the corked async upgrade bug is present (no uWebSockets PR #1929)' : 'no socket died: this binary behaves as one with uWebSockets PR #1929');
process.exit(outcomes.closed > 0 || outcomes.refused > 0 ? 1 : 0);
