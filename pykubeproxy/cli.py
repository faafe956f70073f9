"""Command line: kube-proxy's flags and --config file → Config, then run what was asked."""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from pykubeproxy.backends.iptables.kernel import (
    IptablesBinaries,
    IptablesError,
    KernelIptables,
    cleanup,
    detect_backend,
)
from pykubeproxy.backends.iptables.ruleset import format_restore, ruleset_to_json
from pykubeproxy.backends.iptables.sync import IptablesSyncer, SyncError, chunk_rules
from pykubeproxy.backends.ipvs.apply import cleanup as ipvs_cleanup
from pykubeproxy.backends.ipvs.apply import destroy_stale_sets
from pykubeproxy.backends.ipvs.errors import IpvsError
from pykubeproxy.backends.ipvs.ipsets import format_ipsets
from pykubeproxy.backends.ipvs.ipvsadm import format_ipvs
from pykubeproxy.backends.ipvs.kernel import PyrouteIpvs
from pykubeproxy.backends.ipvs.model import DEFAULT_SCHEDULER
from pykubeproxy.backends.ipvs.node import check_kernel_modules, ensure_ipvs_sysctls
from pykubeproxy.backends.ipvs.plan import plan_ipvs
from pykubeproxy.backends.ipvs.rules import render_ipvs_ruleset
from pykubeproxy.backends.ipvs.sync import IpvsSyncer
from pykubeproxy.config import (
    Config,
    ConfigError,
    build_config,
    parse_duration,
    read_config_document,
)
from pykubeproxy.conntrack import Conntrack
from pykubeproxy.daemon import FileSource, Proxy, load_files, run_sync_loop
from pykubeproxy.health import ProxyHealth
from pykubeproxy.log import get_logger, setup_logging
from pykubeproxy.metrics import ProxyMetrics, standard_registry
from pykubeproxy.observe import observe
from pykubeproxy.pipeline import Desired, desired_state, ipvs_options, node_identity
from pykubeproxy.servers import (
    Listener,
    ListenError,
    RulesView,
    health_routes,
    metrics_routes,
)
from pykubeproxy.sources.files import ManifestError, read_manifests
from pykubeproxy.sources.kube import KubeSource, RateLimiter, api_client, requesters
from pykubeproxy.store import Store
from pykubeproxy.sysctl import ensure_sysctl

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

# kube-proxy flags we accept so existing DaemonSets keep starting, but do not act on (yet).
IGNORED_FLAGS = (
    "--bind-address",
    "--bind-address-hard-fail",
    "--config-sync-period",
    "--conntrack-max-per-core",
    "--conntrack-min",
    "--conntrack-tcp-be-liberal",
    "--conntrack-tcp-timeout-close-wait",
    "--conntrack-tcp-timeout-established",
    "--conntrack-udp-timeout",
    "--conntrack-udp-timeout-stream",
    "--detect-local-mode",
    "--feature-gates",
    "--init-only",
    "--kube-api-content-type",
    "--log-flush-frequency",
    "--logging-format",
    "--oom-score-adj",
    "--pod-bridge-interface",
    "--pod-interface-name-prefix",
    "--profiling",
    "--proxy-port-range",
    "--show-hidden-metrics-for-version",
    "--write-config-to",
)


def parse_bool(text: str) -> bool:
    """Go's flag booleans: true/false, 1/0, t/f."""
    value = text.strip().lower()
    if value in ("true", "t", "1"):
        return True
    if value in ("false", "f", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse that suggests the closest flag when given one it does not know."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            known = [opt for action in self._actions for opt in action.option_strings]
            hints = []
            for arg in unknown:
                guess = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1)
                if guess:
                    hints.append(f"{arg}: did you mean {guess[0]}?")
            if hints:
                message = f"{message} ({'; '.join(hints)})"
        super().error(message)


def _kube_proxy_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", metavar="FILE", help="a KubeProxyConfiguration file; flags override it")
    add(
        "--proxy-mode",
        dest="mode",
        choices=("iptables", "ipvs", "nftables"),
        help="which proxy mode to use (default iptables)",
    )
    add("--hostname-override", help="this node's name, if not the hostname")
    add("--cluster-cidr", help="the pod network; traffic from outside it is masqueraded")
    add(
        "--masquerade-all",
        nargs="?",
        const=True,
        type=parse_bool,
        help="masquerade all traffic sent to Service cluster IPs",
    )
    add(
        "--iptables-masquerade-bit",
        dest="masquerade_bit",
        type=int,
        help="the fwmark bit that marks packets for SNAT (0-31, default 14)",
    )
    add(
        "--iptables-localhost-nodeports",
        dest="localhost_nodeports",
        nargs="?",
        const=True,
        type=parse_bool,
        help="accept NodePort connections on 127.0.0.1 (default true)",
    )
    add(
        "--nodeport-addresses",
        action="append",
        metavar="CIDRS",
        help="CIDRs (comma-separated, or 'primary') of node addresses that accept NodePorts",
    )
    add("--ipvs-scheduler", help="IPVS scheduler (rr, wrr, lc, wlc, sh, dh, mh, ...; default rr)")
    add("--ipvs-sync-period", type=duration, help="IPVS mode: longest time between full syncs")
    add("--ipvs-min-sync-period", type=duration, help="IPVS mode: shortest time between syncs")
    add(
        "--ipvs-strict-arp",
        nargs="?",
        const=True,
        type=parse_bool,
        help="IPVS mode: arp_ignore=1 and arp_announce=2 so nodes do not answer ARP for VIPs",
    )
    add(
        "--ipvs-exclude-cidrs",
        action="append",
        metavar="CIDRS",
        help="IPVS mode: virtual servers in these CIDRs are not cleaned up (comma-separated)",
    )
    add("--ipvs-tcp-timeout", type=duration, help="IPVS idle TCP session timeout")
    add("--ipvs-tcpfin-timeout", type=duration, help="IPVS TCP FIN_WAIT timeout")
    add("--ipvs-udp-timeout", type=duration, help="IPVS UDP session timeout")
    add(
        "--iptables-sync-period",
        dest="sync_period",
        type=duration,
        help="the longest time between full syncs, e.g. 30s or 1m (default 30s)",
    )
    add(
        "--iptables-min-sync-period",
        dest="min_sync_period",
        type=duration,
        help="the shortest time between syncs (default 1s)",
    )
    add("--kubeconfig", help="the kubeconfig file to reach the API server with")
    add("--master", help="the API server's URL (overrides the kubeconfig)")
    add("--kube-api-qps", dest="api_qps", type=float, help="API requests per second")
    add("--kube-api-burst", dest="api_burst", type=int, help="API request burst")
    add("--metrics-bind-address", help="HOST:PORT for /metrics (default 127.0.0.1:10249)")
    add("--healthz-bind-address", help="HOST:PORT for /healthz (default 0.0.0.0:10256)")
    add("--cleanup", action="store_true", help="remove every rule the proxy installed and exit")
    add("-v", "--v", dest="verbosity", type=int, default=0, help="log verbosity (0-10)")


def _own_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--dry-run",
        action="store_true",
        help="print what would be written to the kernel (iptables-restore input); touch nothing",
    )
    add(
        "--from-file",
        action="append",
        type=Path,
        metavar="PATH",
        help="read Services, EndpointSlices and Nodes from a file or directory of YAML/JSON "
        "manifests instead of the API server (repeatable)",
    )
    add(
        "--node-ip",
        action="append",
        metavar="IP",
        help="this node's IP address, when no Node object says (repeatable)",
    )
    add(
        "--output",
        choices=("text", "json"),
        default="text",
        help="--dry-run output: iptables-restore text or JSON (tables → chains → rules)",
    )
    add(
        "--once",
        action="store_true",
        help="with --from-file: sync the kernel once and exit (0 when the kernel took the rules)",
    )
    add(
        "--iptables-backend",
        choices=("auto", "legacy", "nft"),
        help="which iptables binaries to use (default: detect from the node's rules)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pykubeproxy",
        description="A drop-in kube-proxy: programs Service forwarding rules into this node.",
        epilog="Accepted for compatibility with kube-proxy but ignored (a warning is logged): "
        + ", ".join(IGNORED_FLAGS),
        allow_abbrev=False,
        argument_default=None,
    )
    _kube_proxy_flags(parser)
    _own_flags(parser)
    ignored = parser.add_argument_group("ignored kube-proxy flags")
    for flag in IGNORED_FLAGS:
        ignored.add_argument(
            flag, dest=f"ignored:{flag}", nargs="?", const="true", help=argparse.SUPPRESS
        )
    return parser


# Parsed flag destinations that map straight onto Config fields.
_CONFIG_FLAGS = (
    "mode",
    "hostname_override",
    "cluster_cidr",
    "masquerade_all",
    "masquerade_bit",
    "localhost_nodeports",
    "sync_period",
    "min_sync_period",
    "kubeconfig",
    "master",
    "api_qps",
    "api_burst",
    "metrics_bind_address",
    "healthz_bind_address",
    "iptables_backend",
    "ipvs_scheduler",
    "ipvs_sync_period",
    "ipvs_min_sync_period",
    "ipvs_strict_arp",
    "ipvs_tcp_timeout",
    "ipvs_tcpfin_timeout",
    "ipvs_udp_timeout",
)


def _split_lists(values: Sequence[str]) -> tuple[str, ...]:
    """Repeated and comma-separated flag values (Go's string slices), as one tuple."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {name: getattr(args, name) for name in _CONFIG_FLAGS}
    for name in ("ipvs_exclude_cidrs", "nodeport_addresses"):
        if values := getattr(args, name):
            overrides[name] = _split_lists(values)
    return {name: value for name, value in overrides.items() if value is not None}


def load_config(args: argparse.Namespace) -> tuple[Config, tuple[str, ...]]:
    """Defaults ← --config file ← flags; and the file settings we ignore."""
    file_values: dict[str, Any] = {}
    ignored: tuple[str, ...] = ()
    if args.config:
        path = Path(args.config)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        try:
            settings = read_config_document(doc)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        file_values, ignored = dict(settings.values), settings.ignored
    return build_config(file_values, _flag_overrides(args)), ignored


def _warn_ignored(args: argparse.Namespace, file_ignored: tuple[str, ...]) -> None:
    log = get_logger("pykubeproxy.cli")
    for flag in IGNORED_FLAGS:
        if getattr(args, f"ignored:{flag}") is not None:
            log.warning("flag accepted for kube-proxy compatibility but ignored", flag=flag)
    for key in file_ignored:
        log.warning("config setting accepted for kube-proxy compatibility but ignored", key=key)


def _print_ipvs_plan(args: argparse.Namespace, config: Config, desired: Desired) -> int:
    """IPVS mode's --dry-run: virtual servers, ipsets and the remaining iptables rules."""
    opts = ipvs_options(config, desired.state.node)
    plan = plan_ipvs(desired.state, opts)
    ruleset = render_ipvs_ruleset(plan, opts)
    if args.output == "json":
        body = {
            "virtualServers": [
                {
                    "service": v.comment,
                    "protocol": v.protocol,
                    "address": v.address,
                    "port": v.port,
                    "scheduler": v.scheduler,
                    "persistence": v.persistence,
                    "realServers": [f"{r.address}:{r.port}" for r in v.real_servers],
                }
                for v in plan.virtual_servers
            ],
            "addresses": list(plan.addresses),
            "ipsets": {s.name: list(s.entries) for s in plan.ipsets},
            **ruleset_to_json(ruleset),
        }
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return EXIT_OK
    sys.stdout.write("# IPVS virtual servers (ipvsadm -Sn)\n" + format_ipvs(plan))
    addresses = " ".join(plan.addresses) or "(none)"
    sys.stdout.write(f"# addresses on kube-ipvs0: {addresses}\n")
    sys.stdout.write("# ipsets (ipset restore)\n" + format_ipsets(plan.ipsets))
    sys.stdout.write("# iptables (iptables-restore --noflush)\n" + format_restore(ruleset))
    return EXIT_OK


def run_dry_run(args: argparse.Namespace, config: Config) -> int:
    log = get_logger("pykubeproxy")
    if not args.from_file:
        log.error("--dry-run needs --from-file (reading the API server comes in a later release)")
        return EXIT_USAGE
    manifests = read_manifests(args.from_file)
    store = Store()
    for kind, objects in manifests.objects.items():
        store.replace(kind, objects)
    identity = node_identity(config, tuple(args.node_ip or ()))
    desired = desired_state(store.snapshot(), config, identity)
    log.info("rendering for " + desired.note)
    for skipped in (*manifests.skipped, *desired.state.skipped):
        report = log.warning if skipped.invalid else log.info
        report(
            "skipped",
            object=f"{skipped.kind} {skipped.namespace}/{skipped.name}",
            reason=skipped.reason,
        )
    if config.mode == "ipvs":
        return _print_ipvs_plan(args, config, desired)
    ruleset = desired.ruleset()
    if args.output == "json":
        body = ruleset_to_json(ruleset)
        body["skipped"] = [str(s) for s in (*manifests.skipped, *desired.state.skipped)]
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        sys.stdout.write(format_restore(ruleset))
    log.info(
        "dry run",
        services=len(desired.state.services),
        rules=sum(t.rule_count for t in ruleset),
    )
    return EXIT_OK


def run_cleanup(config: Config) -> int:
    """Remove what either proxy mode (ours or kube-proxy's) left: rules, IPVS, sets, kube-ipvs0."""
    log = get_logger("pykubeproxy")
    try:
        removed = cleanup()
    except IptablesError as exc:
        log.error("cleanup failed", error=str(exc))
        return EXIT_FAILURE
    log.info("iptables cleanup done", chains_removed=removed)
    try:
        with PyrouteIpvs() as handle:
            if Path("/proc/net/ip_vs").exists():
                ipvs_cleanup(handle)
            else:  # no IPVS in this kernel: only our sets and interface can be left
                destroy_stale_sets(handle, ())
                handle.delete_dummy_interface()
    except (IpvsError, OSError) as exc:
        log.error("IPVS cleanup failed", error=str(exc))
        return EXIT_FAILURE
    return EXIT_OK


def _kube_source(config: Config, node_name: str, store: Store) -> KubeSource:
    api = api_client(config.kubeconfig, config.master)
    return KubeSource(
        request_by_kind=requesters(api, node_name),
        store=store,
        limiter=RateLimiter(config.api_qps, config.api_burst),
    )


def _serve(config: Config, proxy: Proxy, store: Store) -> list[Listener]:
    """Metrics, /rules, /healthz and /livez, fed by every change and sync; SIGUSR1 logs rules."""
    registry = standard_registry()
    metrics = ProxyMetrics(registry, started=time.time())
    metrics.backend.info({"mode": config.mode, "backend": proxy.syncer.kernel.backend})
    health = ProxyHealth(timeout=2 * config.periods[1])
    rules = RulesView()
    observe(proxy, store, metrics=metrics, health=health, rules=rules)
    log = get_logger("pykubeproxy")
    signal.signal(signal.SIGUSR1, lambda *_: log.info("rules", rules=rules.text()))
    metrics_listener = Listener(
        config.metrics_bind_address, metrics_routes(registry, rules), "metrics"
    )
    try:
        health_listener = Listener(
            config.healthz_bind_address, health_routes(health, metrics), "healthz"
        )
    except ListenError:
        metrics_listener.server.server_close()
        raise
    return [metrics_listener.start(), health_listener.start()]


def _nodeports_on_loopback(config: Config) -> bool:
    nets = [n for n in config.nodeport_addresses if n != "primary"]
    if not config.nodeport_addresses:
        return True
    return any(ipaddress.ip_network(n, strict=False).overlaps(LOOPBACK) for n in nets)


def _ipvs_syncer(config: Config, kernel: KernelIptables) -> IpvsSyncer:
    """Check and prepare the node for IPVS mode (modules, sysctls, timeouts), as kube-proxy."""
    check_kernel_modules(config.ipvs_scheduler or DEFAULT_SCHEDULER)
    ensure_ipvs_sysctls(strict_arp=config.ipvs_strict_arp)
    handle = PyrouteIpvs()
    handle.set_timeouts(
        tcp=int(config.ipvs_tcp_timeout),
        tcpfin=int(config.ipvs_tcpfin_timeout),
        udp=int(config.ipvs_udp_timeout),
    )
    return IpvsSyncer(
        handle,
        kernel,
        chunk_rules=chunk_rules(kernel.backend),
        grace_period=config.ipvs_graceful_period,
        exclude_cidrs=config.ipvs_exclude_cidrs,
    )


def run_proxy(args: argparse.Namespace, config: Config) -> int:
    log = get_logger("pykubeproxy")
    if config.mode == "nftables":
        log.error("proxy mode nftables is not implemented yet; use iptables or ipvs")
        return EXIT_USAGE
    try:
        choice = detect_backend(requested=config.iptables_backend)
    except IptablesError as exc:
        log.error("cannot use iptables", error=str(exc))
        return EXIT_FAILURE
    log.info("iptables backend chosen", backend=choice.backend, reason=choice.reason)
    if config.localhost_nodeports and _nodeports_on_loopback(config):
        # NodePorts on 127.0.0.1 need the kernel to route DNATed loopback traffic (kube-proxy).
        ensure_sysctl("net/ipv4/conf/all/route_localnet", 1)
    kernel = KernelIptables(IptablesBinaries(choice.backend))
    identity = node_identity(config, tuple(args.node_ip or ()))
    syncer: IptablesSyncer | IpvsSyncer
    if config.mode == "ipvs":
        try:
            syncer = _ipvs_syncer(config, kernel)
        except IpvsError as exc:
            log.error("cannot run in IPVS mode", error=str(exc))
            return EXIT_FAILURE
    else:
        syncer = IptablesSyncer(kernel, chunk_rules=chunk_rules(choice.backend))
    conntrack = Conntrack() if shutil.which("conntrack") else None
    if conntrack is None:
        log.warning("conntrack is not installed: stale UDP flows will not be cleared")
    proxy = Proxy(config=config, identity=identity, syncer=syncer, conntrack=conntrack)
    store = Store()
    if args.once:
        if not args.from_file:
            log.error("--once needs --from-file")
            return EXIT_USAGE
        load_files(store, args.from_file)
        try:
            proxy.sync(store, full=True)
        except SyncError as exc:
            log.error("the kernel refused the rules", error=str(exc))
            return EXIT_FAILURE
        return EXIT_OK
    source: FileSource | KubeSource
    if args.from_file:
        source = FileSource(store, args.from_file)
    else:
        try:
            source = _kube_source(config, identity.name, store)
        except Exception as exc:  # the client raises several kinds for a bad or missing config
            log.error("cannot configure the Kubernetes API client", error=str(exc))
            return EXIT_FAILURE
        source.start()
    try:
        listeners = _serve(config, proxy, store)
    except ListenError as exc:
        log.error("cannot start", error=str(exc))
        if isinstance(source, KubeSource):
            source.stop(timeout=2.0)
        return EXIT_FAILURE
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("running", node=identity.name, source="files" if args.from_file else "api")
    try:
        run_sync_loop(proxy, store, source, stop=stop)
    finally:
        if isinstance(source, KubeSource):
            source.stop(timeout=2.0)
        for listener in listeners:
            listener.stop()
    # Rules stay in place: traffic keeps flowing while the proxy restarts, as with kube-proxy.
    log.info("stopped; rules left in place")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbosity or 0)
    log = get_logger("pykubeproxy")
    try:
        config, file_ignored = load_config(args)
    except ConfigError as exc:
        log.error("invalid configuration", error=str(exc))
        return EXIT_USAGE
    _warn_ignored(args, file_ignored)
    try:
        if args.cleanup:
            return run_cleanup(config)
        if args.dry_run:
            return run_dry_run(args, config)
        return run_proxy(args, config)
    except ManifestError as exc:
        log.error("cannot read manifests", error=str(exc))
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
