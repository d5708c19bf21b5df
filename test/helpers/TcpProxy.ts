import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A loopback TCP proxy in front of a server port, to cut connections the way a network does:
 * `cutAll()` resets every piped connection on both sides at once, with no WebSocket close
 * frame and no FIN, like Wi-Fi going away. While `blocked`, new connections are reset on
 * arrival and never reach the server (the network is still down).
 */
export class TcpProxy {
  /** The port the server behind listens on; set before the first connection arrives. */
  target = 0;
  blocked = false;
  /** Connections accepted and piped, over the proxy's life. */
  accepted = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  /** Listens on 127.0.0.1, port 0. */
  static async start(target = 0): Promise<TcpProxy> {
    const server = createServer();
    const proxy = new TcpProxy(server);
    proxy.target = target;
    server.on('connection', (client) => proxy.pipe(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  get port(): number {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('the proxy is not listening');
    return address.port;
  }

  /** Resets every open connection, both the browser's side and the server's. */
  cutAll(): number {
    const count = this.sockets.size;
    for (const socket of this.sockets) reset(socket);
    this.sockets.clear();
    return count;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private pipe(client: Socket): void {
    if (this.blocked || this.target === 0) {
      reset(client);
      return;
    }
    this.accepted++;
    const upstream = createConnection({ host: '127.0.0.1', port: this.target });
    this.sockets.add(client);
    this.sockets.add(upstream);
    // Either side going away takes the other with it. A cut socket's errors are expected; 'close' follows them.
    for (const [socket, peer] of [[client, upstream], [upstream, client]] as const) {
      socket.on('error', () => {});
      socket.on('close', () => {
        this.sockets.delete(socket);
        peer.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}

/** RST rather than FIN: the peer learns of it only as a broken connection. */
function reset(socket: Socket): void {
  if (socket.destroyed) return;
  if (typeof socket.resetAndDestroy === 'function' && socket.readyState !== 'opening') socket.resetAndDestroy();
  else socket.destroy();
}
