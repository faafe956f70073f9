"""Owns the per-pod echo server: answers every TCP connection and UDP datagram with the pod name.

Run inside a pod namespace:

    ip netns exec NS python echo_server.py --name pod-a --port 8080 --port 9090

It prints ``READY`` (flushed) once every socket is bound and listening, then one line per
request (``tcp 8080 10.244.1.20:41234``) so tests can check which source address a pod saw
(masquerade vs. preserved client IP). It exits cleanly on SIGTERM or SIGINT.

Stdlib only, so it can run with ``python -I -S`` for a fast start.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
from types import FrameType


class _Stop(Exception):
    """Raised from the signal handler to leave the select loop."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _open_sockets(ports: list[int]) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for port in ports:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(tcp)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("0.0.0.0", port))
            # A deep backlog: the random-split tests open many short connections in a row.
            tcp.listen(512)
            tcp.setblocking(False)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(udp)
            udp.bind(("0.0.0.0", port))
            udp.setblocking(False)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _serve_tcp(listener: socket.socket, reply: bytes, port: int) -> None:
    try:
        conn, peer = listener.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return
    with conn:
        conn.settimeout(1.0)
        try:
            conn.sendall(reply)
            # Send FIN after the reply so the client reads EOF rather than a reset.
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    print(f"tcp {port} {peer[0]}:{peer[1]}", flush=True)


def _serve_udp(sock: socket.socket, reply: bytes, port: int) -> None:
    try:
        _data, peer = sock.recvfrom(65535)
    except (BlockingIOError, InterruptedError, ConnectionRefusedError):
        return
    try:
        sock.sendto(reply, peer)
    except OSError:
        return
    print(f"udp {port} {peer[0]}:{peer[1]}", flush=True)


def serve(name: str, ports: list[int]) -> None:
    reply = f"{name}\n".encode()
    socks = _open_sockets(ports)
    sel = selectors.DefaultSelector()
    try:
        for s in socks:
            port = s.getsockname()[1]
            handler = _serve_tcp if s.type == socket.SOCK_STREAM else _serve_udp
            sel.register(s, selectors.EVENT_READ, (handler, port))
        print("READY", flush=True)
        while True:
            for key, _mask in sel.select():
                handler, port = key.data
                handler(key.fileobj, reply, port)
    except _Stop:
        pass
    finally:
        sel.close()
        for s in socks:
            s.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="pod name sent back to every client")
    parser.add_argument("--port", type=int, action="append", required=True, help="repeatable")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    serve(args.name, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
