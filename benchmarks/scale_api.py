"""The API-server side of `scale.py`: a fake kube-apiserver holding issue 11's cluster.

`scale.py` starts this as a child process *inside* the benchmark's network namespace
(`ip netns exec NS python benchmarks/scale_api.py ...`), so that pykubeproxy, running in the same
namespace, reaches it on that namespace's 127.0.0.1. It serves the tests' `FakeApiServer`
(tests/support/fake_apiserver.py, formerly tests/api/: real list/watch over chunked HTTPS, the
client authenticated by its certificate as on a real cluster; the kubeconfig carries the CA and
the client's certificate) holding the Node, N Services and N EndpointSlices of `cluster.py`.

Protocol, one JSON object per line:
  stdout, once ready:  {"ready": true, "port": P, "kubeconfig": PATH, "objects": K}
  stdin, a command:    {"op": "update"|"create", "resource": R, "obj": {...}}
                       {"op": "delete", "resource": R, "namespace": NS, "name": NAME}
  stdout, its answer:  {"ok": true, "t": MONOTONIC}   (CLOCK_MONOTONIC, read just before the
                       write is applied: the moment the event exists for the watchers)
                       {"ok": false, "error": "..."}
It exits at the end of stdin (or on SIGTERM), stopping the server.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import cluster  # noqa: E402  (benchmarks/cluster.py)

# The tests' fake API server: tests/support/ since the tests became a package, tests/api/ before.
try:
    from tests.support.fake_apiserver import FakeApiServer
except ImportError:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from api.fake_apiserver import FakeApiServer  # type: ignore[no-redef]

RESOURCES = {"Node": "nodes", "Service": "services", "EndpointSlice": "endpointslices"}


def answer(body: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()


def serve(server: FakeApiServer, services: int, kubeconfig: Path) -> None:
    objects = cluster.generate(services)
    for obj in objects:
        server.create(RESOURCES[str(obj["kind"])], obj)
    server.write_kubeconfig(kubeconfig)
    answer(
        {"ready": True, "port": server.port, "kubeconfig": str(kubeconfig), "objects": len(objects)}
    )
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            op, resource = command["op"], command["resource"]
            started = time.monotonic()
            if op == "update":
                server.update(resource, command["obj"])
            elif op == "create":
                server.create(resource, command["obj"])
            elif op == "delete":
                server.delete(resource, command.get("namespace"), command["name"])
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # report and keep serving: the benchmark decides what to do
            answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        answer({"ok": True, "t": started})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, required=True)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--bookmark-interval", type=float, default=5.0)
    args = parser.parse_args()
    # SIGTERM from the benchmark: leave the loop through the normal path (server stopped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with FakeApiServer(bookmark_interval=args.bookmark_interval) as server:
        serve(server, args.services, args.kubeconfig)


if __name__ == "__main__":
    main()
