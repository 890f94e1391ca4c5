"""Links and bridges as rtnetlink shows them (agent/collect/links.py fills these)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BridgePort:
    name: str
    index: int
    hairpin: bool | None  # IFLA_BRPORT_MODE; None when the kernel did not report it
    peer_netns_id: int | None = None  # IFLA_LINK_NETNSID: the veth's far end lives in another netns
    kind: str | None = None  # veth, ...
    peer_index: int | None = None  # IFLA_LINK: the far end's ifindex, inside its own netns
    peer_name: str | None = None  # usually eth0
    peer_netns: str | None = None  # where the far end was found: /run/netns/cni-..., /proc/<pid>/ns/net
    pod_ips: list[str] = field(default_factory=list)  # addresses on the far end (scope global)
    peer_error: str | None = None  # why the far end could not be resolved

    @property
    def is_pod(self) -> bool:
        """A veth whose far end sits in another network namespace: a pod's (or container's) interface."""
        return self.kind == "veth" and self.peer_netns_id is not None


@dataclass
class Bridge:
    name: str
    index: int
    promiscuous: bool
    up: bool
    ports: list[BridgePort] = field(default_factory=list)

    def pod_ports(self) -> list[BridgePort]:
        return [p for p in self.ports if p.is_pod]


@dataclass
class Links:
    bridges: list[Bridge] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    netns_scanned: int = 0  # network namespaces looked at to find veth far ends
    addresses: list[str] = field(default_factory=list)  # the node's own global addresses (not Service VIPs)

    def bridge(self, name: str) -> Bridge | None:
        return next((b for b in self.bridges if b.name == name), None)
