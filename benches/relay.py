#!/usr/bin/env python3
"""A bare TCP relay, the reference for what any user-space proxy can do on this machine.

    relay.py LISTEN_PORT UPSTREAM_PORT [BUFFER_BYTES]

Accepts on 127.0.0.1:LISTEN_PORT and copies bytes both ways to 127.0.0.1:UPSTREAM_PORT with
recv_into/sendall and one buffer per direction (1 MiB by default), TCP_NODELAY on both
sockets. No HTTP, no TLS, no auth: the cost of one more loopback hop and two copies, and
nothing else. bench.py runs it beside nginx and regate for the blob GETs.
"""

import socket
import sys
import threading


def pump(src, dst, size):
    buf = memoryview(bytearray(size))
    try:
        while True:
            n = src.recv_into(buf)
            if n == 0:
                break
            dst.sendall(buf[:n])
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def main():
    listen, upstream = int(sys.argv[1]), int(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 20
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen))
    srv.listen(128)
    while True:
        client, _ = srv.accept()
        try:
            up = socket.create_connection(("127.0.0.1", upstream))
        except OSError:
            client.close()
            continue
        for s in (client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(client, up, size), daemon=True).start()
        threading.Thread(target=pump, args=(up, client, size), daemon=True).start()


if __name__ == "__main__":
    main()
