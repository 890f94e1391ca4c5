"""kube-proxy's and kubelet's configuration as a snapshot may hold it: the fields of its kind, never the text.

A config file is named by a process's --config flag; whatever it names, only a mapping whose `kind` is
the component's own (kube-proxy and kubelet refuse a file without it too) is kept, and of it only the
top-level fields listed here. So a --config pointing at a kubeconfig, a key or /etc/shadow yields an
error that quotes nothing of the file (no YAML snippet, no value), and a real config file keeps what the
checks read plus its neighbours, never credentials (kubelet's staticPodURLHeader, kube-proxy's
clientConnection are left out).
"""

from __future__ import annotations

import datetime
from typing import Any

import yaml

KUBE_PROXY_KIND = "KubeProxyConfiguration"
KUBELET_KIND = "KubeletConfiguration"
MAX_CONFIG_BYTES = 1 << 20

# KubeProxyConfiguration v1alpha1, less clientConnection, logging and winkernel.
KUBE_PROXY_FIELDS = frozenset({
    "apiVersion", "kind", "featureGates", "hostnameOverride", "bindAddress", "healthzBindAddress",
    "metricsBindAddress", "bindAddressHardFail", "enableProfiling", "showHiddenMetricsForVersion", "mode",
    "iptables", "ipvs", "nftables", "detectLocalMode", "detectLocal", "clusterCIDR", "nodePortAddresses",
    "oomScoreAdj", "conntrack", "configSyncPeriod", "portRange", "syncPeriod", "minSyncPeriod", "linux",
})
# KubeletConfiguration: the networking and runtime fields, nothing about authentication, TLS or headers.
KUBELET_FIELDS = frozenset({
    "apiVersion", "kind", "hairpinMode", "containerRuntimeEndpoint", "clusterDNS", "clusterDomain", "podCIDR",
    "resolvConf", "makeIPTablesUtilChains", "iptablesMasqueradeBit", "iptablesDropBit", "featureGates",
    "maxPods", "address", "port", "healthzBindAddress", "healthzPort", "cgroupDriver", "failSwapOn",
})
FIELDS = {KUBE_PROXY_KIND: KUBE_PROXY_FIELDS, KUBELET_KIND: KUBELET_FIELDS}


class ConfigRefused(Exception):
    """The text is not the component's config; the message quotes nothing of it."""


def _plain(value: Any) -> Any:
    """YAML's timestamps and odd keys as JSON-safe values (a snapshot is JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    return value


def known_fields(data: Any, kind: str) -> dict[str, Any]:
    """The fields of `kind` from a decoded config; ConfigRefused when it is not a `kind`."""
    if not isinstance(data, dict):
        raise ConfigRefused("not a YAML mapping")
    if data.get("kind") != kind:
        raise ConfigRefused(f"not a {kind} (its kind differs or is missing)")
    return {k: _plain(v) for k, v in data.items() if k in FIELDS[kind]}


def parse(text: str, kind: str) -> dict[str, Any]:
    """A config file's text -> its known fields. Errors say where YAML failed, never what was there."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigRefused("larger than 1 MiB")
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigRefused(f"not valid YAML{where}") from None
    except yaml.YAMLError:
        raise ConfigRefused("not valid YAML") from None
    return known_fields(data, kind)
