"""Snapshot data for conntrack beyond its fill: event rates per CPU summed, and flows toward Services.

The table can hold a million entries: the collector streams it and keeps only aggregates here, one
group per (destination, reply source), with a few example tuples each.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ConntrackStats:
    """/proc/net/stat/nf_conntrack, summed over CPUs; rates are per second since the previous read."""

    totals: dict[str, int] = field(default_factory=dict)  # drop, early_drop, insert_failed, invalid
    rates: dict[str, float] | None = None  # None on the first read, or when a counter went down
    interval_s: float | None = None
    cpus: int = 0


@dataclass
class FlowGroup:
    """Conntrack entries toward one Service destination that share where the reply comes from."""

    family: int  # 4 | 6
    protocol: str  # "udp" | "sctp"
    orig_dst: str  # ip:port the client sent to ([ip]:port for IPv6)
    reply_src: str  # ip:port the replies come from: the DNAT target, or orig_dst itself when not DNATed
    entries: int
    examples: list[str] = field(default_factory=list)  # "src -> dst => reply_src", at most a few


@dataclass
class ConntrackFlows:
    read_at: float
    entries_read: int  # entries the dump returned (after the kernel's protocol filter)
    destinations_watched: int  # Service IPs and node ports the read looked for
    groups: list[FlowGroup] = field(default_factory=list)
    complete: bool = True  # False when more groups came than may be kept: judge nothing from it
    kernel_filter: bool = True  # the kernel filtered by protocol (CTA_FILTER); else the reader did
