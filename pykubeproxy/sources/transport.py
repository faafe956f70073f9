"""The way to the API server: where it is and who we are (kubeconfig or in-cluster), and requests.

The common configurations are read here and served by urllib3 directly: an in-cluster
ServiceAccount (token file, CA, KUBERNETES_SERVICE_HOST/PORT), and kubeconfigs whose user has a
token, a token file or a client certificate, with a CA (inline or in a file) or
insecure-skip-tls-verify. Importing the `kubernetes` client costs more than a second and tens
of MiB; it is imported only for what this module does not handle (exec credential plugins,
auth providers, basic auth), which `Unsupported` names.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import urllib3
import yaml

from pykubeproxy import __version__
from pykubeproxy.log import get_logger

log = get_logger("pykubeproxy.sources.transport")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# client-go re-reads a token file this often: bound ServiceAccount tokens are rotated on disk.
TOKEN_REREAD_SECONDS = 60.0
# Kubeconfig user fields this module does not carry out (the `kubernetes` client does).
FOREIGN_USER_FIELDS = ("exec", "auth-provider", "username", "password")


class ConfigError(Exception):
    """The configuration cannot be used: a missing file, a context that is not there."""


class Unsupported(ConfigError):
    """A valid configuration this module does not carry out (for the `kubernetes` client)."""


class TokenFile:
    """A bearer token read from a file, read again once it is a minute old (as client-go)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.clock = path, clock
        self._token = self._read()  # a file that is not there is a configuration error
        self._read_at = clock()
        self._lock = threading.Lock()

    def _read(self) -> str:
        try:
            return self.path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {self.path}: {exc}") from exc

    def token(self) -> str:
        with self._lock:
            if self.clock() - self._read_at >= TOKEN_REREAD_SECONDS:
                self._read_at = self.clock()
                # Unreadable (being rotated, say): the token we have may still be good.
                with suppress(ConfigError):
                    self._token = self._read()
            return self._token


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Where the API server is and how to talk to it. Files and inline data are both bytes."""

    server: str
    ca: bytes | None = None  # PEM; None: the system's trust store
    client_cert: bytes | None = None  # PEM
    client_key: bytes | None = None  # PEM
    token: str = ""
    token_file: TokenFile | None = field(default=None, compare=False)
    insecure: bool = False
    tls_server_name: str = ""

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"pykubeproxy/{__version__}"}
        token = self.token_file.token() if self.token_file else self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca.decode() if self.ca else None)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert and self.client_key:
            # load_cert_chain reads only files: a private directory, removed at once.
            with tempfile.TemporaryDirectory(prefix="pykubeproxy-") as tmp:
                cert, key = Path(tmp, "client.crt"), Path(tmp, "client.key")
                cert.write_bytes(self.client_cert)
                key.touch(mode=0o600)
                key.write_bytes(self.client_key)
                context.load_cert_chain(cert, key)
        return context


# --- loading ---------------------------------------------------------------------------------


def load_config(
    kubeconfig: str, master: str, *, environ: Mapping[str, str] = os.environ
) -> ApiConfig:
    """--kubeconfig if given, else the Pod's ServiceAccount; --master names another server."""
    if kubeconfig:
        config = load_kubeconfig(Path(kubeconfig))
    else:
        try:
            config = load_incluster(environ=environ)
        except ConfigError:
            if not master:
                raise
            config = ApiConfig(server=master)  # --master alone: no credentials, as kube-proxy
    return replace(config, server=master) if master else config


def load_incluster(
    *, root: Path = SERVICE_ACCOUNT, environ: Mapping[str, str] = os.environ
) -> ApiConfig:
    """The ServiceAccount a Pod is given: token and CA files, the service's host and port."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return ApiConfig(
        server=f"https://{host}:{port}",
        ca=_read(root / "ca.crt"),
        token_file=TokenFile(root / "token"),
    )


def load_kubeconfig(path: Path, *, context: str = "") -> ApiConfig:
    """The current (or named) context of a kubeconfig file, relative paths taken from its folder."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the kubeconfig {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"the kubeconfig {path} is not a mapping")
    name = context or document.get("current-context") or ""
    chosen = _named(document, "contexts", "context", name)
    cluster = _named(document, "clusters", "cluster", chosen.get("cluster", ""))
    user = _named(document, "users", "user", chosen.get("user", ""), optional=True)
    if foreign := [f for f in FOREIGN_USER_FIELDS if user.get(f)]:
        raise Unsupported(f"the kubeconfig's user has {', '.join(foreign)}")
    if not cluster.get("server"):
        raise ConfigError(f"the kubeconfig {path} names no server for context {name!r}")
    base = path.parent
    token_file = user.get("tokenFile")
    return ApiConfig(
        server=str(cluster["server"]),
        ca=_data_or_file(cluster, "certificate-authority", base),
        client_cert=_data_or_file(user, "client-certificate", base),
        client_key=_data_or_file(user, "client-key", base),
        token=str(user.get("token") or ""),
        token_file=TokenFile(base / token_file) if token_file and not user.get("token") else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=str(cluster.get("tls-server-name") or ""),
    )


def _named(
    document: Mapping[str, Any], section: str, key: str, name: str, *, optional: bool = False
) -> dict[str, Any]:
    for entry in document.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return cast(dict[str, Any], entry.get(key) or {})
    if optional:
        return {}
    raise ConfigError(f"the kubeconfig has no {key} named {name!r}")


def _data_or_file(section: Mapping[str, Any], name: str, base: Path) -> bytes | None:
    """`NAME-data` (base64, as kubectl writes it), else the file `NAME` (relative to base)."""
    if data := section.get(f"{name}-data"):
        try:
            return base64.b64decode(data)
        except ValueError as exc:
            raise ConfigError(f"{name}-data is not base64: {exc}") from exc
    if file := section.get(name):
        return _read(base / file)
    return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


# --- requests --------------------------------------------------------------------------------

# The reflector's keyword arguments (the `kubernetes` client's spelling) → query parameters.
QUERY_NAMES = {
    "label_selector": "labelSelector",
    "field_selector": "fieldSelector",
    "limit": "limit",
    "_continue": "continue",
    "watch": "watch",
    "resource_version": "resourceVersion",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "timeout_seconds": "timeoutSeconds",
}


def query_string(arguments: Mapping[str, Any]) -> dict[str, str]:
    """The query of a list/watch call; arguments left out or None are not sent."""
    query = {}
    for argument, value in arguments.items():
        if value is None or value == "":
            continue
        if argument not in QUERY_NAMES:
            raise TypeError(f"unknown list/watch argument {argument!r}")
        query[QUERY_NAMES[argument]] = str(value).lower() if isinstance(value, bool) else str(value)
    return query


class Transport:
    """Requests to one API server over a small pool of kept-alive connections."""

    def __init__(self, config: ApiConfig, *, connections: int = 4) -> None:
        self.config = config
        options: dict[str, Any] = {}
        if config.server.startswith("https:"):
            options["ssl_context"] = config.ssl_context()
            if config.tls_server_name:
                options["server_hostname"] = config.tls_server_name
            if config.insecure:
                options["cert_reqs"] = ssl.CERT_NONE
                # Said once here, rather than by urllib3 on every request.
                log.warning(
                    "the API server's certificate is not verified (insecure-skip-tls-verify)"
                )
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        # Our reflectors back off and retry themselves: urllib3's retries would hide failures.
        self.pool = urllib3.PoolManager(num_pools=1, maxsize=connections, retries=False, **options)

    def get(
        self, path: str, query: Mapping[str, str], *, timeout: tuple[float, float] | None
    ) -> urllib3.BaseHTTPResponse:
        """Send the request; the body is left to the caller to read (and release)."""
        return self.pool.request(
            "GET",
            self.config.server.rstrip("/") + path,
            fields=query,
            headers=self.config.headers(),
            preload_content=False,
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]) if timeout else None,
        )

    def post(
        self, path: str, body: bytes, *, timeout: tuple[float, float]
    ) -> urllib3.BaseHTTPResponse:
        """Send a JSON body; the response is read whole (a created object is small)."""
        return self.pool.request(
            "POST",
            self.config.server.rstrip("/") + path,
            body=body,
            headers={**self.config.headers(), "Content-Type": "application/json"},
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
        )

    def close(self) -> None:
        self.pool.clear()
