"""API objects (as JSON dicts) -> the compact cluster model. Pure functions, shared by the live watcher
and the `--cluster-state FILE` reader, so both read objects exactly the same way."""

from __future__ import annotations

import ipaddress
import sys
from datetime import datetime
from typing import Any

from agent.model.cluster import (
    ClusterState,
    ContainerPort,
    EndpointSpec,
    NodeSpec,
    PodSpec,
    ServicePortSpec,
    ServiceSpec,
    SlicePort,
    SliceSpec,
)

ZONE_LABEL = "topology.kubernetes.io/zone"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
MAX_NODE_NAMES = 50  # enough to show a mistyped --node-name; a big cluster's list is not evidence
TOPOLOGY_ANNOTATIONS = ("service.kubernetes.io/topology-mode", "service.kubernetes.io/topology-aware-hints")
# kube-proxy lists Services and EndpointSlices with this label selector: a Service another proxy serves
# (service-proxy-name) gets no rules from it, nor do headless Services' slices. The live informers ask the
# API server for exactly this; a kubectl file is filtered the same way by `proxied`.
PROXY_NAME_LABEL, HEADLESS_LABEL = "service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless"
PROXIED_SELECTOR = f"!{HEADLESS_LABEL},!{PROXY_NAME_LABEL}"


def proxied(obj: dict[str, Any]) -> bool:
    """Whether kube-proxy's label selector (PROXIED_SELECTOR) lets this Service or EndpointSlice through."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return HEADLESS_LABEL not in labels and PROXY_NAME_LABEL not in labels


def parse_ip_sloppy(text: str) -> str | None:
    """An IP as kube-proxy reads it (k8s.io/utils/net ParseIPSloppy): IPv4 octets with leading zeros are
    decimal ("010.001.000.001" is 10.1.0.1), which Python's ipaddress rejects. Canonical form, or None."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    parts = text.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts):
        octets = [int(p, 10) for p in parts]
        if all(o <= 255 for o in octets):
            return ".".join(map(str, octets))
    return None


def _ips(values: list[Any] | None) -> list[str]:
    return [ip for ip in (parse_ip_sloppy(str(v)) for v in values or []) if ip is not None]


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _last_change(meta: dict[str, Any], *extra: Any) -> float | None:
    times = [parse_time(meta.get("creationTimestamp")), *(parse_time(m.get("time")) for m in
             meta.get("managedFields") or []), *(parse_time(x) for x in extra)]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def compact_service(obj: dict[str, Any]) -> ServiceSpec:
    meta, spec = obj.get("metadata", {}), obj.get("spec", {})
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    ingress = (obj.get("status", {}).get("loadBalancer", {}) or {}).get("ingress") or []
    # ipMode Proxy (1.30+): the load balancer delivers to the node itself; kube-proxy programs no VIP rule.
    lb_ips = _ips([i.get("ip") for i in ingress if i.get("ip") and i.get("ipMode", "VIP") == "VIP"])
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(cfg.get("timeoutSeconds") or 10800)
    annotations = meta.get("annotations") or {}
    return ServiceSpec(
        namespace=meta.get("namespace", ""), name=meta.get("name", ""), type=spec.get("type", "ClusterIP"),
        cluster_ips=["None" if ip == "None" else (parse_ip_sloppy(ip) or ip) for ip in cluster_ips],
        ports=[ServicePortSpec(name=p.get("name", ""), protocol=p.get("protocol", "TCP"), port=int(p["port"]),
                               node_port=p.get("nodePort"), target_port=sys.intern(str(p.get("targetPort") or "")))
               for p in spec.get("ports") or []],
        external_ips=_ips(spec.get("externalIPs")),
        load_balancer_ips=lb_ips,
        load_balancer_source_ranges=list(spec.get("loadBalancerSourceRanges") or []),
        session_affinity_seconds=affinity,
        external_traffic_policy=spec.get("externalTrafficPolicy") or "Cluster",
        internal_traffic_policy=spec.get("internalTrafficPolicy") or "Cluster",
        health_check_node_port=spec.get("healthCheckNodePort"),
        topology_aware=bool(spec.get("trafficDistribution")) or any(
            str(annotations.get(a, "")).lower() not in ("", "disabled", "false") for a in TOPOLOGY_ANNOTATIONS),
        last_change=_last_change(meta),
        selector=selector_string(spec.get("selector")),
    )


def selector_string(selector: Any) -> str:
    """A Service's map selector as a label-selector string, keys sorted ("" for none)."""
    if not isinstance(selector, dict):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def parse_selector(text: str) -> dict[str, str]:
    """The inverse of selector_string."""
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def compact_slice(obj: dict[str, Any]) -> SliceSpec:
    meta = obj.get("metadata", {})
    eps = []
    for ep in obj.get("endpoints") or []:
        addresses = _ips(ep.get("addresses"))
        if not addresses:
            continue
        cond = ep.get("conditions") or {}
        ready = cond.get("ready")
        ready = True if ready is None else bool(ready)
        serving = cond.get("serving")
        eps.append(EndpointSpec(
            address=addresses[0],  # kube-proxy uses only the first address of an endpoint
            ready=ready, serving=ready if serving is None else bool(serving),
            terminating=bool(cond.get("terminating")), node_name=ep.get("nodeName"), zone=ep.get("zone"),
            hint_zones=[z.get("name", "") for z in (ep.get("hints") or {}).get("forZones") or []],
        ))
    annotations = meta.get("annotations") or {}
    return SliceSpec(
        namespace=meta.get("namespace", ""), name=meta.get("name", ""),
        service=(meta.get("labels") or {}).get(SERVICE_NAME_LABEL, ""),
        address_type=obj.get("addressType", "IPv4"),
        ports=[SlicePort(name=p.get("name") or "", port=int(p.get("port") or 0), protocol=p.get("protocol", "TCP"))
               for p in obj.get("ports") or []],
        endpoints=eps,
        last_change=parse_time(annotations.get(TRIGGER_TIME)) or _last_change(meta),
    )


def compact_node(obj: dict[str, Any]) -> NodeSpec:
    meta = obj.get("metadata", {})
    return NodeSpec(name=meta.get("name", ""), zone=(meta.get("labels") or {}).get(ZONE_LABEL),
                    addresses=_ips([a.get("address") for a in obj.get("status", {}).get("addresses") or []
                                    if a.get("type") in ("InternalIP", "ExternalIP")]))


def compact_pod(obj: dict[str, Any]) -> PodSpec:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    ips = [p.get("ip") for p in status.get("podIPs") or []] or ([status["podIP"]] if status.get("podIP") else [])
    statuses = status.get("containerStatuses") or []
    finished = [parse_time(((s.get("lastState") or {}).get("terminated") or {}).get("finishedAt")) for s in statuses]
    waiting = [((s.get("state") or {}).get("waiting") or {}).get("reason") for s in statuses]
    return PodSpec(
        namespace=meta.get("namespace", ""), name=meta.get("name", ""), ips=_ips(ips),
        host_network=bool(spec.get("hostNetwork")),
        labels=dict(meta.get("labels") or {}),
        container_ports=[ContainerPort(name=p.get("name") or "", port=int(p.get("containerPort") or 0),
                                       protocol=p.get("protocol") or "TCP")
                         for c in spec.get("containers") or [] for p in c.get("ports") or []],
        node_name=spec.get("nodeName"),
        phase=status.get("phase") or "",
        ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []),
        restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
        last_restart=max((t for t in finished if t is not None), default=None),
        waiting_reason=next((r for r in waiting if r), None),
    )


def state_from_items(items: list[dict[str, Any]], node_name: str, origin: str, fetched_at: float) -> ClusterState:
    """A ClusterState from a mixed list of API objects (kubectl's `v1 List`). Only this node's pods are
    kept (what the checks use); `svcdoctor explain` reads a Service's pods with pods_from_items."""
    state = ClusterState(origin=origin, fetched_at=fetched_at)
    for obj in items:
        kind = obj.get("kind")
        if kind in ("Service", "EndpointSlice") and not proxied(obj):
            continue
        if kind == "Service":
            state.services.append(compact_service(obj))
        elif kind == "EndpointSlice":
            state.slices.append(compact_slice(obj))
        elif kind == "Node":
            name = obj.get("metadata", {}).get("name")
            if len(state.node_names) < MAX_NODE_NAMES and isinstance(name, str):
                state.node_names.append(name)
            if name == node_name:
                state.node = compact_node(obj)
        elif kind == "Pod" and obj.get("spec", {}).get("nodeName") == node_name:
            state.pods.append(compact_pod(obj))
    return state


def pods_from_items(items: list[dict[str, Any]], namespace: str) -> list[PodSpec]:
    """Every pod of one namespace in a mixed list (for `svcdoctor explain --cluster-state`)."""
    return [compact_pod(o) for o in items
            if o.get("kind") == "Pod" and (o.get("metadata") or {}).get("namespace") == namespace]
