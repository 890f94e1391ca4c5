"""kube-proxy's config from the API: the `kube-proxy` ConfigMap in `kube-system` (kubeadm's layout).

The DaemonSet cannot read the file inside kube-proxy's pod (that needs CAP_SYS_PTRACE), but kubeadm's
kube-proxy mounts exactly this ConfigMap at /var/lib/kube-proxy, key `config.conf`; a Role in
kube-system lets the agent `get` this one ConfigMap and nothing else (deploy/daemonset.yaml). Whether
this node's kube-proxy really mounts it is not verified, and the source says so. Raw JSON through the
`kubernetes` client, as agent/collect/kubeapi.py does. The answer is kept for TTL_S (a failure for
RETRY_S): thousands of agents must not ask every interval for what changes at upgrades.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from agent.collect.component_config import KUBE_PROXY_KIND, ConfigRefused, parse

NAMESPACE, NAME = "kube-system", "kube-proxy"
KUBEADM_KEY = "config.conf"
TTL_S = 600.0
RETRY_S = 60.0


class KubeProxyConfigMap:
    def __init__(self, api_client: Any, ttl_s: float = TTL_S, retry_s: float = RETRY_S) -> None:
        self.api_client, self.ttl_s, self.retry_s = api_client, ttl_s, retry_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any] | None, str] | None = None  # (until, config, source or error)

    def _read(self, timeout_s: float) -> tuple[dict[str, Any] | None, str]:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            resp = client.CoreV1Api(self.api_client).read_namespaced_config_map(
                NAME, NAMESPACE, _preload_content=False, _request_timeout=timeout_s)
            body = json.loads(resp.data)  # type: ignore[arg-type]  # raw: _preload_content=False
        except ApiException as exc:
            return None, f"ConfigMap {NAMESPACE}/{NAME}: HTTP {exc.status} {exc.reason}"
        except Exception as exc:  # unreachable, refused, not JSON: said, never raised past here
            first = (str(exc).splitlines() or [""])[0]
            return None, f"ConfigMap {NAMESPACE}/{NAME}: {type(exc).__name__}: {first}"
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return None, f"ConfigMap {NAMESPACE}/{NAME} has no data"
        keys = [KUBEADM_KEY] if KUBEADM_KEY in data else sorted(data)
        for key in keys:
            try:
                config = parse(str(data[key]), KUBE_PROXY_KIND)
            except ConfigRefused:
                continue
            return config, f"ConfigMap {NAMESPACE}/{NAME} key {key} (assumed mounted by this node's kube-proxy)"
        return None, f"ConfigMap {NAMESPACE}/{NAME} holds no {KUBE_PROXY_KIND}"

    def __call__(self, timeout_s: float) -> tuple[dict[str, Any] | None, str]:
        """(config, source) or (None, why not)."""
        now = time.monotonic()
        with self._lock:
            if self._cached is not None and now < self._cached[0]:
                return self._cached[1], self._cached[2]
        config, said = self._read(timeout_s)
        with self._lock:
            self._cached = (now + (self.ttl_s if config is not None else self.retry_s), config, said)
        return config, said
