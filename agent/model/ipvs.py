"""Snapshot data for the ipvs source (filled by agent/collect/ipvs.py).

What kube-proxy's IPVS mode programmed: the kernel's virtual servers and their real servers (what
`ipvsadm -Ln` shows), the addresses on the kube-ipvs0 dummy interface (IPVS only sees traffic to an
address the node owns), and the KUBE-* ipsets its iptables rules match on. Plain dataclasses only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INTERFACE = "kube-ipvs0"
# ipsets kube-proxy's IPVS mode keeps (pkg/proxy/ipvs/ipset.go); entries as `ipset save` prints them.
CLUSTER_IP_SET = "KUBE-CLUSTER-IP"  # hash:ip,port  "172.30.0.41,tcp:80"
EXTERNAL_IP_SET = "KUBE-EXTERNAL-IP"  # hash:ip,port
LOAD_BALANCER_SET = "KUBE-LOAD-BALANCER"  # hash:ip,port
NODE_PORT_SETS = ("KUBE-NODE-PORT-TCP", "KUBE-NODE-PORT-UDP", "KUBE-NODE-PORT-SCTP-HASH")  # bitmap:port / hash


@dataclass
class RealServer:
    address: str  # "10.180.0.1:80", "[fd00::1]:80"
    weight: int  # 0: kube-proxy keeps a terminating endpoint for its open connections
    active_connections: int = 0
    inactive_connections: int = 0


@dataclass
class VirtualServer:
    protocol: str  # "tcp" | "udp" | "sctp"
    address: str  # "172.30.0.41:80", "[fd00::1]:80"
    family: int  # 4 | 6
    scheduler: str = ""
    persistent_seconds: int | None = None  # session affinity (ipvsadm -p), None when not persistent
    fwmark: int | None = None  # firewall-mark services (kube-proxy does not use them)
    real_servers: list[RealServer] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


@dataclass
class IpvsState:
    kernel_available: bool = True  # False: the IPVS netlink family is missing (ip_vs not loaded)
    kernel_error: str | None = None  # why IPVS could not be opened, in a sentence
    virtual_servers: list[VirtualServer] = field(default_factory=list)
    interface_present: bool = False  # kube-ipvs0 exists
    interface_addresses: list[str] = field(default_factory=list)  # IPs on kube-ipvs0, no prefix length
    ipsets: dict[str, list[str]] = field(default_factory=dict)  # KUBE-* set -> members; absent set: no key
    ipset_error: str | None = None  # `ipset save` failed (binary missing, timed out, not its output)

    def has_ipvs_rules(self) -> bool:
        """Anything IPVS mode leaves behind: a virtual server or the kube-ipvs0 interface."""
        return bool(self.virtual_servers) or self.interface_present
