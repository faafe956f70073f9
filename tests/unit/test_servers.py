"""The HTTP listeners: IPv4 and IPv6 addresses, and a clear error when the port is taken."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from pykubeproxy.servers import Listener, ListenError


def hello(_: dict[str, list[str]]) -> tuple[int, str, bytes]:
    return 200, "text/plain", b"hello\n"


@pytest.mark.parametrize(
    ("address", "url_host"), [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "[::1]")]
)
def test_a_listener_serves_on_ipv4_and_ipv6_loopback(address: str, url_host: str) -> None:
    if ":" in url_host and not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    listener = Listener(address, {"/hello": hello}, "test").start()
    try:
        with urllib.request.urlopen(f"http://{url_host}:{listener.port}/hello", timeout=5) as r:
            assert r.read() == b"hello\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://{url_host}:{listener.port}/nope", timeout=5)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        listener.stop()


def test_a_port_in_use_is_reported_with_a_hint_about_kube_proxy() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match="is kube-proxy still running"):
            Listener(f"127.0.0.1:{port}", {}, "metrics")
