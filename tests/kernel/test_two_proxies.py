"""Two proxies in iptables mode on one node (kube-proxy's choice and --service-proxy-name's) share
the nat table's KUBE-SERVICES: each sync rewrites it whole and drops the other's Services.

kube-proxy is not installed here, so a second pykubeproxy without a name plays its part: it
writes the same fixed chains the same way (declared, so flushed, in one iptables-restore).
What this proves is the README's warning, not a way to run them side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.netns import Netns
from tests.support.paths import REPO
from tests.support.proxy_names import OURS, split_cluster


def run_cli(netns: Netns, *args: str | Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pykubeproxy", *map(str, args)]
    return netns.exec(*argv, check=False, timeout=120, cwd=REPO)


def cluster_ips(netns: Netns) -> set[str]:
    """The cluster IPs KUBE-SERVICES sends anywhere, in the nat table of the nft backend."""
    out = netns.exec("iptables-nft-save", "-t", "nat").stdout
    found = set()
    for line in out.splitlines():
        if line.startswith("-A KUBE-SERVICES ") and " -d " in line:
            found.add(line.split(" -d ")[1].split("/")[0])
    return found


def test_a_second_iptables_proxy_on_the_node_wipes_the_first_ones_services(
    netns: Netns, tmp_path: Path
) -> None:
    manifests = tmp_path / "split.yaml"
    manifests.write_text("\n---\n".join(json.dumps(o) for o in split_cluster()), encoding="utf-8")
    common = ("--from-file", manifests, "--once", "--iptables-backend", "nft",
              "--hostname-override", "node-1")  # fmt: skip

    as_kube_proxy = run_cli(netns, *common)
    assert as_kube_proxy.returncode == 0, as_kube_proxy.stderr
    assert cluster_ips(netns) == {"10.96.50.2"}

    named = run_cli(netns, *common, "--service-proxy-name", OURS)
    assert named.returncode == 0, named.stderr
    # Only the named proxy's Service is left: the other proxy's rule went with the rewrite.
    assert cluster_ips(netns) == {"10.96.50.1"}
