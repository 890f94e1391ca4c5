"""Views derived from a Snapshot once per run (agent/checks/derive.py) and shared by the checks and
the reporters: the decided proxy mode, the expected and the programmed Service ports, the iptables
chains' Service names. They travel in the Report, so reporters render them without calling check code
and nothing is computed at scrape time. Frozen; the lists they hold are read-only by contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.model import Finding
from agent.model.iptables import HASHED_PREFIXES, frozen_map
from agent.model.programmed import ExpectedPort, ProgrammedPort, ProgrammedServices


class ServicePortKey(NamedTuple):
    service: str  # "ns/name:port" (or "ns/name" for an unnamed port)
    protocol: str


def hash_of(chain: str) -> str | None:
    """The hash part of a KUBE-SVC/SVL/EXT/FW chain's name."""
    for prefix in HASHED_PREFIXES:
        if chain.startswith(prefix):
            return chain[len(prefix):]
    return None


@dataclass(frozen=True)
class Names:
    """Hash suffix (16 characters) -> Service port, learnt from service-level comments and verified by
    kube-proxy's hash (agent/checks/iptables_names.py)."""

    by_hash: Mapping[str, ServicePortKey] = field(default_factory=frozen_map)

    def of_chain(self, chain: str) -> ServicePortKey | None:
        """The Service port a KUBE-SVC/SVL/EXT/FW chain belongs to, if its name is known."""
        suffix = hash_of(chain)
        return None if suffix is None else self.by_hash.get(suffix)


@dataclass(frozen=True)
class IptablesView:
    """One IP family's iptables rules, seen per Service port."""

    family: int
    names: Names
    ports: tuple[ProgrammedPort, ...]  # sorted by (service, protocol)
    # agent/checks/iptables_services.py's findings: a function of the rules and names alone, so derived with
    # them and taken over with them (None: not derived, as in a view made by hand)
    service_findings: tuple[Finding, ...] | None = None
    # weak references to the RuleSets these were derived from (not saved: it relates objects of one process;
    # weak: a view kept for the next run or served must not keep the rules alive)
    source: object = field(default=None, compare=False, repr=False, metadata={"transient": True})


@dataclass(frozen=True)
class ModeDecision:
    mode: str | None  # None: kube-proxy not seen, nothing to decide from
    source: str
    version: str | None
    configured: str | None = None  # from flags/config/default, when the process was found
    configured_source: str = ""
    reported: str | None = None  # kube-proxy's /proxyMode answer
    node: Mapping[str, str] = field(default_factory=frozen_map)  # mode -> what on the node shows it


@dataclass(frozen=True)
class Views:
    mode: ModeDecision
    iptables: tuple[IptablesView, ...] = ()  # per IP family read, whatever the proxy mode
    expected: tuple[ExpectedPort, ...] | None = None  # None: no usable cluster state
    # the cluster state `expected` was derived from (not saved: it relates objects of one process)
    expected_source: object = field(default=None, compare=False, repr=False, metadata={"transient": True})
    programmed: ProgrammedServices | None = None  # the decided mode's; None: its rules were not read
    nftables_ports: tuple[ProgrammedPort, ...] | None = None  # kube-proxy's nftables tables, when read
    # the structure findings of those tables (agent/checks/nftables.py check_table), per table's IP family: a
    # function of the tables alone, so derived with their ports and taken over with them (about 0.1 s a run
    # at 10k Services)
    nftables_structure: tuple[tuple[int, tuple[Finding, ...]], ...] | None = None
    # weak references to the nftables tables these were derived from, and the LoadBalancer IPs that named them
    # (not saved: it relates objects of one process)
    nftables_source: object = field(default=None, compare=False, repr=False, metadata={"transient": True})

    def iptables_view(self, family: int) -> IptablesView | None:
        return next((v for v in self.iptables if v.family == family), None)
