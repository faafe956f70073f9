"""Config: kube-proxy's settings and defaults, read from a KubeProxyConfiguration file."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

PROXY_MODES = ("iptables", "ipvs", "nftables")
IPTABLES_BACKENDS = ("auto", "legacy", "nft")
IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh")
DURATION_FIELDS = frozenset(
    {
        "sync_period",
        "min_sync_period",
        "ipvs_sync_period",
        "ipvs_min_sync_period",
        "ipvs_tcp_timeout",
        "ipvs_tcpfin_timeout",
        "ipvs_udp_timeout",
    }
)
CONFIG_API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
CONFIG_KIND = "KubeProxyConfiguration"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and says what would be valid."""


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting the proxy runs with. Defaults are kube-proxy's."""

    mode: str = "iptables"
    hostname_override: str = ""
    cluster_cidr: str = ""
    masquerade_all: bool = False
    masquerade_bit: int = 14
    localhost_nodeports: bool = True
    nodeport_addresses: tuple[str, ...] = ()
    sync_period: float = 30.0
    min_sync_period: float = 1.0
    kubeconfig: str = ""
    master: str = ""
    api_qps: float = 5.0
    api_burst: int = 10
    metrics_bind_address: str = "127.0.0.1:10249"
    healthz_bind_address: str = "0.0.0.0:10256"
    iptables_backend: str = "auto"
    ipvs_scheduler: str = ""  # empty: round robin, as kube-proxy
    ipvs_sync_period: float = 30.0
    ipvs_min_sync_period: float = 0.0
    ipvs_strict_arp: bool = False
    ipvs_exclude_cidrs: tuple[str, ...] = ()
    ipvs_tcp_timeout: float = 0.0  # 0: leave the kernel's value
    ipvs_tcpfin_timeout: float = 0.0
    ipvs_udp_timeout: float = 0.0
    # How long a removed IPVS real server may keep its open connections (weight 0 meanwhile).
    ipvs_graceful_period: float = 900.0
    # Ours (--service-proxy-name; no KubeProxyConfiguration field): handle only the Services
    # labelled service.kubernetes.io/service-proxy-name with this value. Empty: kube-proxy's
    # choice, every Service without that label.
    service_proxy_name: str = ""

    def validated(self) -> Config:
        """This config, or a ConfigError naming the first setting that is wrong."""
        if self.mode not in PROXY_MODES:
            raise ConfigError(f"proxy mode {self.mode!r} is not one of {', '.join(PROXY_MODES)}")
        if self.iptables_backend not in IPTABLES_BACKENDS:
            choices = ", ".join(IPTABLES_BACKENDS)
            raise ConfigError(f"iptables backend {self.iptables_backend!r} is not one of {choices}")
        if not 0 <= self.masquerade_bit <= 31:
            raise ConfigError(f"masquerade bit {self.masquerade_bit} is out of range (0-31)")
        if self.sync_period <= 0:
            raise ConfigError("sync period must be greater than zero")
        if self.min_sync_period < 0:
            raise ConfigError("min sync period must not be negative")
        for cidr in self.cluster_cidrs:
            _network(cidr, "cluster CIDR")
        for cidr in self.nodeport_addresses:
            if cidr != "primary":
                _network(cidr, "nodePortAddresses entry")
        for address in (self.metrics_bind_address, self.healthz_bind_address):
            _host_port(address)
        if self.ipvs_scheduler and self.ipvs_scheduler not in IPVS_SCHEDULERS:
            choices = ", ".join(IPVS_SCHEDULERS)
            raise ConfigError(f"IPVS scheduler {self.ipvs_scheduler!r} is not one of {choices}")
        for cidr in self.ipvs_exclude_cidrs:
            _network(cidr, "ipvs excludeCIDRs entry")
        if self.service_proxy_name and not _LABEL_VALUE.fullmatch(self.service_proxy_name):
            raise ConfigError(
                f"service proxy name {self.service_proxy_name!r} is not a valid label value "
                "(at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
                "letter or digit)"
            )
        return self

    @property
    def cluster_cidrs(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.cluster_cidr.split(",") if part.strip())

    def cluster_cidr_of(self, family: int) -> str | None:
        """The pod network of one IP family (kube-proxy takes at most one per family)."""
        for cidr in self.cluster_cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            if net.version == family:
                return str(net)
        return None


def _network(value: str, what: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(f"{what} {value!r} is not a CIDR (like 10.244.0.0/16)") from None


def _host_port(value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"bind address {value!r} is not HOST:PORT")
    if host:
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ConfigError(f"bind address {value!r} does not start with an IP") from None


# A Kubernetes label value (apimachinery's validation); empty is handled by the caller.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (`30s`, `1m30s`, `500ms`, `0`), as kube-proxy's flags take them."""
    text = text.strip()
    if text == "0":
        return 0.0
    position, total = 0, 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if not match:
            raise ConfigError(f"duration {text!r} is not like 30s, 1m30s or 500ms")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not text:
        raise ConfigError("duration is empty")
    return total


# KubeProxyConfiguration (v1alpha1) keys → Config fields. None: a kube-proxy setting we accept
# and ignore (with a warning); a key missing from this table is a typo.
_FILE_KEYS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "mode": "mode",
    "hostnameOverride": "hostname_override",
    "clusterCIDR": "cluster_cidr",
    "nodePortAddresses": "nodeport_addresses",
    "metricsBindAddress": "metrics_bind_address",
    "healthzBindAddress": "healthz_bind_address",
    "clientConnection": {
        "kubeconfig": "kubeconfig",
        "qps": "api_qps",
        "burst": "api_burst",
        "acceptContentTypes": None,
        "contentType": None,
    },
    "iptables": {
        "masqueradeAll": "masquerade_all",
        "masqueradeBit": "masquerade_bit",
        "localhostNodePorts": "localhost_nodeports",
        "syncPeriod": "sync_period",
        "minSyncPeriod": "min_sync_period",
    },
    "ipvs": {
        "syncPeriod": "ipvs_sync_period",
        "minSyncPeriod": "ipvs_min_sync_period",
        "scheduler": "ipvs_scheduler",
        "excludeCIDRs": "ipvs_exclude_cidrs",
        "strictARP": "ipvs_strict_arp",
        "tcpTimeout": "ipvs_tcp_timeout",
        "tcpFinTimeout": "ipvs_tcpfin_timeout",
        "udpTimeout": "ipvs_udp_timeout",
    },
    "nftables": dict.fromkeys(("masqueradeAll", "masqueradeBit", "syncPeriod", "minSyncPeriod")),
    "conntrack": dict.fromkeys(
        (
            "maxPerCore",
            "min",
            "tcpEstablishedTimeout",
            "tcpCloseWaitTimeout",
            "tcpBeLiberal",
            "udpTimeout",
            "udpStreamTimeout",
        ),
    ),
    "detectLocal": dict.fromkeys(("bridgeInterface", "interfaceNamePrefix")),
    "winkernel": None,
    "logging": None,
    "featureGates": None,
    "bindAddress": None,
    "bindAddressHardFail": None,
    "enableProfiling": None,
    "showHiddenMetricsForVersion": None,
    "detectLocalMode": None,
    "oomScoreAdj": None,
    "configSyncPeriod": None,
    "portRange": None,
}


@dataclass(frozen=True, slots=True)
class FileSettings:
    """What a KubeProxyConfiguration file sets, and the keys it sets that we ignore."""

    values: Mapping[str, Any]
    ignored: tuple[str, ...]


def _typo(key: str, known: Mapping[str, Any], where: str) -> ConfigError:
    guess = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {guess[0]!r}?" if guess else ""
    return ConfigError(f"unknown setting {where}{key!r} in the config file{hint}")


def _walk(
    doc: Mapping[str, Any],
    table: Mapping[str, Any],
    prefix: str,
    *,
    values: dict[str, Any],
    ignored: list[str],
) -> None:
    for key, value in doc.items():
        if key not in table:
            raise _typo(key, table, prefix)
        target = table[key]
        if isinstance(target, dict):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"setting {prefix}{key} must be a mapping")
            _walk(value, target, f"{prefix}{key}.", values=values, ignored=ignored)
        elif target is None:
            if key not in ("apiVersion", "kind") and value not in (None, "", [], {}):
                ignored.append(f"{prefix}{key}")
        elif value is not None:
            values[target] = _convert(target, value, f"{prefix}{key}")


_FIELD_TYPES = {f.name: f.type for f in fields(Config)}


def _convert(field_name: str, value: Any, where: str) -> Any:
    kind = _FIELD_TYPES[field_name]
    if field_name in DURATION_FIELDS:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a duration string like '30s'")
        return parse_duration(value)
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{where} must be an integer")
    if kind == "float" and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise ConfigError(f"{where} must be a number")
    if kind == "str" and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    if field_name in ("nodeport_addresses", "ipvs_exclude_cidrs"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of CIDRs")
        return tuple(value)
    return value


def read_config_document(doc: object) -> FileSettings:
    """The settings of one decoded KubeProxyConfiguration document."""
    if not isinstance(doc, dict):
        raise ConfigError("the config file does not hold a KubeProxyConfiguration mapping")
    if doc.get("kind", CONFIG_KIND) != CONFIG_KIND:
        raise ConfigError(f"the config file's kind is {doc.get('kind')!r}, not {CONFIG_KIND}")
    version = doc.get("apiVersion", CONFIG_API_VERSION)
    if version != CONFIG_API_VERSION:
        raise ConfigError(f"the config file's apiVersion is {version!r}, not {CONFIG_API_VERSION}")
    values: dict[str, Any] = {}
    ignored: list[str] = []
    _walk(doc, _FILE_KEYS, "", values=values, ignored=ignored)
    return FileSettings(values=values, ignored=tuple(ignored))


def build_config(*layers: Mapping[str, Any]) -> Config:
    """Defaults, then each layer of overrides in turn (file, then flags), validated."""
    config = Config()
    for layer in layers:
        config = replace(config, **layer)
    return config.validated()
