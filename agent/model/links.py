"""Links and bridges as rtnetlink shows them (agent/collect/links.py fills these)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BridgePort:
    name: str
    index: int
    hairpin: bool | None
    peer_netns_id: int | None = None
    kind: str | None = None  # veth, ...


@dataclass
class Bridge:
    name: str
    index: int
    promiscuous: bool
    up: bool
    ports: list[BridgePort] = field(default_factory=list)


@dataclass
class Links:
    bridges: list[Bridge] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
