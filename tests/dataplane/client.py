"""Owns the traffic client: N independent TCP/UDP requests, outcome counts printed as JSON.

Run inside a namespace:

    ip netns exec NS python client.py --target 10.96.0.10:80 --proto tcp --count 20 --timeout 1

Every request uses a new socket, so the kernel picks a new source port and conntrack sees a
new flow each time (that is what makes iptables' random endpoint split observable). Output:

    {"replies": {"pod-a": 7, "pod-b": 13}, "refused": 0, "timeout": 0, "other_errors": {}}

"refused" is ECONNREFUSED: a TCP RST, or an ICMP port unreachable (what iptables ``REJECT``
sends) on the TCP handshake or on a connected UDP socket. "timeout" is no answer within
``--timeout`` seconds. Anything else is counted by errno name (or a short label) in
"other_errors". Worst-case wall time is about count * timeout.

Stdlib only, so it can run with ``python -I -S`` for a fast start.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import time
from collections import Counter

MAX_COUNT = 10_000
MAX_REPLY = 4096


class _EmptyReply(Exception):
    """The peer answered but sent no name (closed at once, or an empty datagram)."""


def _name_of(data: bytes) -> str:
    name = data.decode("utf-8", "replace").strip().splitlines()
    if not name or not name[0]:
        raise _EmptyReply
    return name[0]


def _tcp_once(ip: str, port: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((ip, port))
        data = b""
        # Read to EOF (the echo server closes after its one line), each read bounded by what
        # is left of this request's budget so a stalled peer cannot stretch the run.
        while len(data) < MAX_REPLY:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            s.settimeout(remaining)
            chunk = s.recv(MAX_REPLY)
            if not chunk:
                break
            data += chunk
        return _name_of(data)


def _udp_once(ip: str, port: int, timeout: float) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        # Connected, so an ICMP port unreachable is reported to us as ECONNREFUSED on recv.
        s.connect((ip, port))
        s.send(b"hello\n")
        return _name_of(s.recv(MAX_REPLY))


def run(ip: str, port: int, proto: str, count: int, timeout: float) -> dict[str, object]:
    once = _tcp_once if proto == "tcp" else _udp_once
    replies: Counter[str] = Counter()
    other: Counter[str] = Counter()
    refused = timed_out = 0
    for _ in range(count):
        try:
            replies[once(ip, port, timeout)] += 1
        except ConnectionRefusedError:
            refused += 1
        except TimeoutError:
            timed_out += 1
        except _EmptyReply:
            other["empty_reply"] += 1
        except OSError as exc:
            # EHOSTUNREACH, ENETUNREACH, ECONNRESET...: named, so a test failure says which.
            other[errno.errorcode.get(exc.errno or 0, type(exc).__name__)] += 1
    return {
        "replies": dict(sorted(replies.items())),
        "refused": refused,
        "timeout": timed_out,
        "other_errors": dict(sorted(other.items())),
    }


def _target(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected IP:PORT, got {value!r}")
    socket.inet_aton(host)
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=_target, required=True, help="IP:PORT")
    parser.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per request")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be within 1..{MAX_COUNT}")
    if not 0 < args.timeout <= 30:
        parser.error("--timeout must be within (0, 30] seconds")
    ip, port = args.target
    print(json.dumps(run(ip, port, args.proto, args.count, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
