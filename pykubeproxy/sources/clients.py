"""How the reflectors reach the API server: our urllib3 transport where it understands the
configuration, else the `kubernetes` client (exec plugins, auth providers), imported only then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from pykubeproxy.log import get_logger
from pykubeproxy.sources.kube import Requester, Response, proxy_label_selector
from pykubeproxy.sources.transport import Transport, Unsupported, load_config, query_string

log = get_logger("pykubeproxy.sources.clients")


@dataclass(frozen=True, slots=True)
class Connection:
    """The list/watch call of each kind, which client makes them, and how to let go of it."""

    request_by_kind: Mapping[str, Requester]
    client: str  # "urllib3" or "kubernetes"
    close: Callable[[], None]
    server: str  # the API server's URL
    # Our own transport, for requests besides list/watch (the Starting event); None when the
    # `kubernetes` client makes the requests, which posts no event.
    transport: Transport | None = None


def connect(config_file: str, master: str, node_name: str, *, proxy_name: str = "") -> Connection:
    """Requests on urllib3 where transport.py understands the configuration, else the client.

    `proxy_name` (--service-proxy-name) narrows the Services and slices listed to those
    labelled with it."""
    try:
        config = load_config(config_file, master)
    except Unsupported as exc:
        log.info("configuration needs the kubernetes client", reason=str(exc))
        api = api_client(config_file, master)
        requests = requesters(api, node_name, proxy_name)
        return Connection(requests, "kubernetes", api.close, str(api.configuration.host))
    transport = Transport(config)
    requests = transport_requesters(transport, node_name, proxy_name)
    return Connection(requests, "urllib3", transport.close, config.server, transport)


def _paths(node_name: str, proxy_name: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Where each kind kube-proxy follows is listed, and kube-proxy's selector for it."""
    proxied = {"label_selector": proxy_label_selector(proxy_name)}
    return {
        "Service": ("/api/v1/services", proxied),
        "EndpointSlice": ("/apis/discovery.k8s.io/v1/endpointslices", proxied),
        "Node": ("/api/v1/nodes", {"field_selector": f"metadata.name={node_name}"}),
    }


def transport_requesters(
    transport: Transport, node_name: str, proxy_name: str = ""
) -> dict[str, Requester]:
    """The list/watch call of each kind, made with urllib3 directly."""

    def requester(path: str, selector: Mapping[str, str]) -> Requester:
        def call(
            *,
            _preload_content: bool = False,  # our responses are always read as streams
            _request_timeout: tuple[float, float] | None = None,
            **arguments: Any,
        ) -> Response:
            query = query_string({**selector, **arguments})
            return cast(Response, transport.get(path, query, timeout=_request_timeout))

        return call

    return {
        kind: requester(path, sel) for kind, (path, sel) in _paths(node_name, proxy_name).items()
    }


def api_client(config_file: str, master: str) -> Any:
    """A configured `kubernetes` ApiClient: --kubeconfig, else in-cluster; --master overrides."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    configuration = k8s_client.Configuration()
    if config_file:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file, client_configuration=configuration
        )
    else:
        try:
            # In a Pod: the ServiceAccount's token and CA, even when --master names the server.
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except k8s_config.ConfigException:
            if not master:
                raise
    if master:
        configuration.host = master
    # Our reflectors back off and retry themselves; urllib3's own retries would hide failures
    # and multiply requests to a struggling API server.
    configuration.retries = False
    return k8s_client.ApiClient(configuration)


def requesters(api: Any, node_name: str, proxy_name: str = "") -> dict[str, Requester]:
    """The list/watch call of each kind kube-proxy follows, with kube-proxy's selectors."""
    selector = proxy_label_selector(proxy_name)
    from kubernetes import client as k8s_client

    core = k8s_client.CoreV1Api(api)
    discovery = k8s_client.DiscoveryV1Api(api)

    # With _preload_content=False (the reflector passes it) the client returns the raw
    # urllib3 response, not the model class its annotations name.
    def services(**query: Any) -> Response:
        return cast(
            Response,
            core.list_service_for_all_namespaces(label_selector=selector, **query),
        )

    def endpoint_slices(**query: Any) -> Response:
        return cast(
            Response,
            discovery.list_endpoint_slice_for_all_namespaces(label_selector=selector, **query),
        )

    def nodes(**query: Any) -> Response:
        return cast(Response, core.list_node(field_selector=f"metadata.name={node_name}", **query))

    return {"Service": services, "EndpointSlice": endpoint_slices, "Node": nodes}
