"""The command line as data: kube-proxy's flags, ours, and defaults ← --config ← flags → Config."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pykubeproxy.config import (
    PROXY_MODES,
    Config,
    ConfigError,
    build_config,
    parse_duration,
    read_config_document,
)

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


@dataclass(frozen=True, slots=True)
class Flag:
    """One flag. `setting`: the Config field it overrides (None for flags that only steer)."""

    name: str
    help: str
    setting: str | None = None
    kind: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    boolean: bool = False  # `--flag` alone means true; `--flag=false` too, as Go's flags
    repeated: bool = False  # repeatable, each value comma-separated (Go's string slices)
    switch: bool = False  # store_true, no value
    metavar: str | None = None
    alias: str | None = None


def _setting(name: str, help_text: str, setting: str, **kw: Any) -> Flag:
    return Flag(name, help_text, setting=setting, **kw)


KUBE_PROXY_FLAGS = (
    Flag("--config", "a KubeProxyConfiguration file; flags override it", metavar="FILE"),
    _setting("--proxy-mode", "which proxy mode to use (default iptables)", "mode",
             choices=PROXY_MODES),
    _setting("--hostname-override", "this node's name, if not the hostname", "hostname_override"),
    _setting("--cluster-cidr", "the pod network; traffic from outside it is masqueraded",
             "cluster_cidr"),
    _setting("--masquerade-all", "masquerade all traffic sent to Service cluster IPs",
             "masquerade_all", boolean=True),
    _setting("--iptables-masquerade-bit",
             "the fwmark bit that marks packets for SNAT (0-31, default 14)", "masquerade_bit",
             kind=int),
    _setting("--iptables-localhost-nodeports",
             "accept NodePort connections on 127.0.0.1 (default true)", "localhost_nodeports",
             boolean=True),
    _setting("--nodeport-addresses",
             "CIDRs (comma-separated, or 'primary') of node addresses that accept NodePorts",
             "nodeport_addresses", repeated=True, metavar="CIDRS"),
    _setting("--ipvs-scheduler", "IPVS scheduler (rr, wrr, lc, wlc, sh, dh, mh, ...; default rr)",
             "ipvs_scheduler"),
    _setting("--ipvs-sync-period", "IPVS mode: longest time between full syncs",
             "ipvs_sync_period", kind=duration),
    _setting("--ipvs-min-sync-period", "IPVS mode: shortest time between syncs",
             "ipvs_min_sync_period", kind=duration),
    _setting("--ipvs-strict-arp",
             "IPVS mode: arp_ignore=1 and arp_announce=2 so nodes do not answer ARP for VIPs",
             "ipvs_strict_arp", boolean=True),
    _setting("--ipvs-exclude-cidrs",
             "IPVS mode: virtual servers in these CIDRs are not cleaned up (comma-separated)",
             "ipvs_exclude_cidrs", repeated=True, metavar="CIDRS"),
    _setting("--ipvs-tcp-timeout", "IPVS idle TCP session timeout", "ipvs_tcp_timeout",
             kind=duration),
    _setting("--ipvs-tcpfin-timeout", "IPVS TCP FIN_WAIT timeout", "ipvs_tcpfin_timeout",
             kind=duration),
    _setting("--ipvs-udp-timeout", "IPVS UDP session timeout", "ipvs_udp_timeout", kind=duration),
    _setting("--iptables-sync-period",
             "the longest time between full syncs, e.g. 30s or 1m (default 30s)", "sync_period",
             kind=duration),
    _setting("--iptables-min-sync-period", "the shortest time between syncs (default 1s)",
             "min_sync_period", kind=duration),
    _setting("--kubeconfig", "the kubeconfig file to reach the API server with", "kubeconfig"),
    _setting("--master", "the API server's URL (overrides the kubeconfig)", "master"),
    _setting("--kube-api-qps", "API requests per second", "api_qps", kind=float),
    _setting("--kube-api-burst", "API request burst", "api_burst", kind=int),
    _setting("--metrics-bind-address", "HOST:PORT for /metrics (default 127.0.0.1:10249)",
             "metrics_bind_address"),
    _setting("--healthz-bind-address", "HOST:PORT for /healthz (default 0.0.0.0:10256)",
             "healthz_bind_address"),
    Flag("--cleanup", "remove every rule the proxy installed and exit", switch=True),
    Flag("--v", "log verbosity (0-10)", kind=int, alias="-v"),
)  # fmt: skip

OWN_FLAGS = (
    Flag("--dry-run", "print what would be written to the kernel (iptables-restore input, or "
         "the IPVS table in ipvs mode) and touch nothing; the objects come from --from-file, "
         "else from one LIST of the cluster (--kubeconfig, in-cluster config, --master; no "
         "watch, no retries: exit 2 with the reason if the API server cannot be read)",
         switch=True),
    Flag("--from-file", "read Services, EndpointSlices and Nodes from a file or directory of "
         "YAML/JSON manifests instead of the API server (repeatable)", kind=Path, metavar="PATH",
         repeated=True),
    Flag("--node-ip", "this node's IP address, when no Node object says (repeatable)",
         metavar="IP", repeated=True),
    Flag("--output", "--dry-run output: iptables-restore text or JSON (tables → chains → rules)",
         choices=("text", "json")),
    Flag("--once", "with --from-file: sync the kernel once and exit (0 when the kernel took the "
         "rules)", switch=True),
    _setting("--service-proxy-name", "handle only the Services (and their EndpointSlices) "
             "labelled service.kubernetes.io/service-proxy-name=NAME, which kube-proxy skips, "
             "so both can run during a migration (default: kube-proxy's choice, every Service "
             "without that label)", "service_proxy_name", metavar="NAME"),
    _setting("--iptables-backend",
             "which iptables binaries to use (default: detect from the node's rules)",
             "iptables_backend", choices=("auto", "legacy", "nft")),
)  # fmt: skip

DEFAULTS = {"v": 0, "output": "text", "cleanup": False, "dry_run": False, "once": False}


def dest(flag: Flag) -> str:
    return flag.setting or flag.name.lstrip("-").replace("-", "_")


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


def _add(parser: argparse.ArgumentParser, flag: Flag) -> None:
    names = [flag.alias, flag.name] if flag.alias else [flag.name]
    kw: dict[str, Any] = {"dest": dest(flag), "help": flag.help}
    if flag.switch:
        kw["action"] = "store_true"
    else:
        kw.update(type=flag.kind, choices=flag.choices, metavar=flag.metavar)
        if flag.boolean:
            kw.update(nargs="?", const=True, type=parse_bool)
        if flag.repeated:
            kw["action"] = "append"
    parser.add_argument(*names, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pykubeproxy",
        description="A drop-in kube-proxy: programs Service forwarding rules into this node.",
        epilog="Accepted for compatibility with kube-proxy but ignored (a warning is logged): "
        + ", ".join(IGNORED_FLAGS),
        allow_abbrev=False,
        argument_default=None,
    )
    for flag in (*KUBE_PROXY_FLAGS, *OWN_FLAGS):
        _add(parser, flag)
    parser.set_defaults(**DEFAULTS)
    ignored = parser.add_argument_group("ignored kube-proxy flags")
    for name in IGNORED_FLAGS:
        ignored.add_argument(
            name, dest=f"ignored:{name}", nargs="?", const="true", help=argparse.SUPPRESS
        )
    return parser


def _split_lists(values: Sequence[str]) -> tuple[str, ...]:
    """Repeated and comma-separated flag values (Go's string slices), as one tuple."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields the command line sets."""
    overrides = {}
    for flag in (*KUBE_PROXY_FLAGS, *OWN_FLAGS):
        value = getattr(args, dest(flag))
        if flag.setting is None or value is None:
            continue
        overrides[flag.setting] = _split_lists(value) if flag.repeated else value
    return overrides


def load_config(args: argparse.Namespace) -> tuple[Config, tuple[str, ...]]:
    """Defaults ← --config file ← flags; and the file settings we ignore."""
    file_values: dict[str, Any] = {}
    ignored: tuple[str, ...] = ()
    if args.config:
        import yaml  # only for --config: the other commands never parse YAML here

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
    return build_config(file_values, flag_overrides(args)), ignored


def ignored_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """The ignored kube-proxy flags the command line used."""
    return tuple(flag for flag in IGNORED_FLAGS if getattr(args, f"ignored:{flag}") is not None)
