/**
 * A TCP proxy between a test's client and PostgreSQL that cuts a connection at a chosen
 * moment, as a network reset or a failover would: right before a statement reaches the
 * server, or right after the server committed it and before the client hears so. The
 * statement is recognised by a marker among its parameters (an idempotency key, a metadata
 * value), which every driver sends as text in the Bind message, prepared or not.
 */
import { connect, createServer, type Socket } from 'node:net';

export type DropPoint = 'before' | 'after';

export interface FaultProxy {
  /** `url` with its host and port replaced by the proxy's. */
  urlFor: (url: string) => string;
  /** Cut the connection that next sends `marker`, at `when`; once. */
  dropOn: (marker: string, when: DropPoint) => void;
  /** How many client writes carried `marker` (one per try of a statement). */
  seen: (marker: string) => number;
  close: () => Promise<void>;
}

// ReadyForQuery ('Z', length 5, status): the server's last message after a Sync, sent once
// the statement's transaction has committed (or failed). The server flushes its output there.
const endsWithReadyForQuery = (data: Buffer) =>
  data.length >= 6 && data[data.length - 6] === 0x5a && data.readUInt32BE(data.length - 5) === 5;

export async function startFaultProxy(serverUrl: string): Promise<FaultProxy> {
  const target = new URL(serverUrl);
  const drops = new Map<string, DropPoint>();
  const counts = new Map<string, number>();
  const sockets = new Set<Socket>();

  const proxy = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    let armed = false;
    let held = Buffer.alloc(0);
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('error', cut);
      socket.on('close', () => {
        sockets.delete(socket);
        cut();
      });
    }
    client.on('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      for (const marker of counts.keys()) {
        if (!text.includes(marker)) continue;
        counts.set(marker, (counts.get(marker) ?? 0) + 1);
        const drop = drops.get(marker);
        if (drop === undefined) continue;
        drops.delete(marker);
        if (drop === 'before') return cut();
        armed = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!armed) {
        client.write(chunk);
        return;
      }
      // Hold the answer back until the server says the statement is over, then drop it.
      held = Buffer.concat([held, chunk]);
      if (endsWithReadyForQuery(held)) cut();
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address();
  if (!address || typeof address !== 'object') throw new Error('the proxy has no port');

  return {
    urlFor: (url) => {
      const parsed = new URL(url);
      parsed.hostname = '127.0.0.1';
      parsed.port = String(address.port);
      return parsed.toString();
    },
    dropOn: (marker, when) => {
      counts.set(marker, counts.get(marker) ?? 0);
      drops.set(marker, when);
    },
    seen: (marker) => counts.get(marker) ?? 0,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}
