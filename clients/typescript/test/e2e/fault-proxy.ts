/**
 * A TCP proxy in front of the live API that breaks connections on purpose. Each new connection takes
 * the next action of its plan (then "pass"):
 * - "pass": forward both ways;
 * - "drop": forward the request, wait until the server starts answering (so it surely processed
 *   it), then close the client's connection without a byte of the answer;
 * - { cutAfterEvents: n }: forward the answer up to the end of its n-th SSE event, then close.
 */
import net from "node:net";

export type ProxyAction = "pass" | "drop" | { cutAfterEvents: number };

export class FaultProxy {
  /** Connections accepted, with the action each took. */
  readonly actions: ProxyAction[] = [];
  /** Set when a "drop" connection's server had begun to answer. */
  serverAnsweredDroppedRequest = false;
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;

  constructor(
    private readonly upstream: URL,
    private readonly plan: ProxyAction[],
  ) {
    this.server = net.createServer((client) => this.handle(client));
  }

  /** Listen on a free loopback port; the proxy's base URL. */
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address() as net.AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private track(socket: net.Socket): net.Socket {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    return socket;
  }

  private handle(client: net.Socket): void {
    const action = this.plan.shift() ?? "pass";
    this.actions.push(action);
    this.track(client);
    const upstream = this.track(net.connect(Number(this.upstream.port), this.upstream.hostname));
    client.pipe(upstream);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    if (action === "pass") {
      upstream.pipe(client);
    } else if (action === "drop") {
      upstream.once("data", () => {
        this.serverAnsweredDroppedRequest = true;
        closeBoth();
      });
    } else {
      this.cutAfterEvents(client, upstream, action.cutAfterEvents, closeBoth);
    }
  }

  /** Forward until the answer's (n+1)-th event begins, then close: exactly n whole events get through. */
  private cutAfterEvents(client: net.Socket, upstream: net.Socket, n: number, closeBoth: () => void): void {
    let seen = "";
    let sent = 0;
    let cut = false;
    upstream.on("data", (chunk: Buffer) => {
      if (cut) return;
      seen += chunk.toString("latin1"); // byte for byte, so offsets are byte offsets
      let at = -1;
      for (let i = 0; i <= n; i++) {
        at = seen.indexOf("\nid: ", at + 1);
        if (at < 0) break;
      }
      if (at < 0) {
        client.write(Buffer.from(seen.slice(sent), "latin1"));
        sent = seen.length;
        return;
      }
      cut = true;
      client.write(Buffer.from(seen.slice(sent, at + 1), "latin1"), closeBoth);
    });
  }
}
