"""kube-proxy's running configuration from its own /configz, on the metrics port, on this node only.

kube-proxy registers its *internal* KubeProxyConfiguration with configz (cmd/kube-proxy/app), and the
internal types carry no JSON tags, so the answer is `{"kubeproxy.config.k8s.io": {"Mode": "nftables",
"IPTables": {"SyncPeriod": "30s", ...}, ...}}`: Go field names. They are turned into the v1alpha1
names the settings read (`mode`, `iptables.syncPeriod`), and only the known fields are kept. Since 1.29
the internal type holds one top-level SyncPeriod for whichever mode runs; it is copied to that mode's
section, where the config file keeps it.
"""

from __future__ import annotations

import json
import urllib.error
from typing import Any

from agent.collect.component_config import KUBE_PROXY_KIND, MAX_CONFIG_BYTES, ConfigRefused, known_fields
from agent.collect.local_addrs import local_opener, refusal

GROUP = "kubeproxy.config.k8s.io"
# Go field names whose v1alpha1 JSON name is not "first letter lowered".
RENAMED = {"IPTables": "iptables", "IPVS": "ipvs", "NFTables": "nftables", "ClusterCIDR": "clusterCIDR",
           "OOMScoreAdj": "oomScoreAdj", "TCPEstablishedTimeout": "tcpEstablishedTimeout",
           "TCPCloseWaitTimeout": "tcpCloseWaitTimeout", "UDPTimeout": "udpTimeout",
           "UDPStreamTimeout": "udpStreamTimeout", "TCPTimeout": "tcpTimeout", "TCPFinTimeout": "tcpFinTimeout",
           "TCPBeLiberal": "tcpBeLiberal"}


def _json_name(go: str) -> str:
    return RENAMED.get(go) or go[:1].lower() + go[1:]


def _renamed(value: Any) -> Any:
    if isinstance(value, dict):
        return {_json_name(str(k)): _renamed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v) for v in value]
    return value


def from_configz(body: str) -> dict[str, Any]:
    """/configz's answer -> the known KubeProxyConfiguration fields, as the config file names them."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ConfigRefused("/configz did not answer JSON") from None
    internal = doc.get(GROUP) if isinstance(doc, dict) else None
    if not isinstance(internal, dict):
        raise ConfigRefused(f"/configz has no {GROUP} section")
    config = _renamed(internal)
    config["kind"] = KUBE_PROXY_KIND
    mode = str(config.get("mode") or "iptables").lower()
    period = config.get("syncPeriod")
    section = config.get(mode)
    if period and isinstance(section, dict) and not section.get("syncPeriod"):
        section["syncPeriod"] = period
    return known_fields(config, KUBE_PROXY_KIND)


def fetch(url: str, timeout_s: float) -> dict[str, Any]:
    """GET /configz on this node; ConfigRefused with one sentence when there is no usable answer."""
    refused = refusal(url)
    if refused is not None:
        raise ConfigRefused(refused)
    opener = local_opener()
    try:
        with opener.open(url, timeout=timeout_s) as resp:
            body = resp.read(MAX_CONFIG_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ConfigRefused(f"{url} answered HTTP {exc.code}") from None
    except (OSError, urllib.error.URLError) as exc:
        raise ConfigRefused(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if len(body) > MAX_CONFIG_BYTES:
        raise ConfigRefused("/configz answered more than 1 MiB")
    return from_configz(body.decode("utf-8", errors="replace"))
