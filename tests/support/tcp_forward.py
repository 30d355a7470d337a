#!/usr/bin/env python3
"""Forward TCP connections: namespaces reach a host service bound to
loopback (RabbitMQ here listens on 127.0.0.1 only) through the bridge.

  tcp_forward.py --listen ADDR:PORT --to HOST:PORT

Prints "listening on ADDR:PORT" once ready.
"""
import argparse
import asyncio


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--to", required=True)
    args = ap.parse_args()
    lhost, lport = args.listen.rsplit(":", 1)
    thost, tport = args.to.rsplit(":", 1)

    async def handle(r1, w1):
        try:
            r2, w2 = await asyncio.open_connection(thost, int(tport))
        except OSError:
            w1.close()
            return
        await asyncio.gather(pipe(r1, w2), pipe(r2, w1))

    server = await asyncio.start_server(handle, lhost, int(lport))
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
