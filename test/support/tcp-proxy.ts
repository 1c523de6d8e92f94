// A loopback TCP proxy in front of a server: `cut()` destroys every connection through it at once,
// as a network failure does (the client sees its socket close abnormally, 1006, with no close frame).
import net from 'node:net';
import type { AddressInfo } from 'node:net';

export class TcpProxy {
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    /** Both sides of every connection through the proxy. */
    private readonly sockets: Set<net.Socket>,
    /** The client's side of every connection through the proxy. */
    private readonly clientSides: Set<net.Socket>,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    const sockets = new Set<net.Socket>();
    const clientSides = new Set<net.Socket>();
    const server = net.createServer((inbound) => {
      clientSides.add(inbound);
      inbound.on('close', () => clientSides.delete(inbound));
      const outbound = net.connect(targetPort, '127.0.0.1');
      for (const [a, b] of [[inbound, outbound], [outbound, inbound]] as const) {
        sockets.add(a);
        a.on('close', () => sockets.delete(a));
        a.on('error', () => b.destroy());
        a.pipe(b);
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new TcpProxy(server, (server.address() as AddressInfo).port, sockets, clientSides);
  }

  /** Relays a `ws://host:port/path` URL of the target through the proxy. */
  url(targetUrl: string): string {
    const u = new URL(targetUrl);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  /** Drops every connection through the proxy, both ways. */
  cut(): void {
    for (const socket of this.sockets) socket.resetAndDestroy();
  }

  /**
   * Drops only the client's side of every connection: the server's side stays open, a half-open
   * connection the server has not noticed (it still counts the call as connected).
   */
  cutClientSide(): void {
    for (const socket of this.clientSides) socket.resetAndDestroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
