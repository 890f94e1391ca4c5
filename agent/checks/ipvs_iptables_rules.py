"""The iptables rules kube-proxy's IPVS mode writes, as data: each one with the ipset it matches on and what
traffic loses when it is gone.

Taken from kube-proxy's own source, kubernetes/kubernetes pkg/proxy/ipvs/proxier.go (v1.29+, the version with
KUBE-IPVS-OUT-FILTER): `ipsetWithIptablesChain` (the per-set jumps), `writeIptablesRules` (the KUBE-CLUSTER-IP
masquerade, the external IP rules, the jump to KUBE-NODE-PORT, KUBE-LOAD-BALANCER's mark, the source-range
DROP, the health-check ACCEPT, KUBE-IPVS-FILTER) and `acceptIPVSTraffic`; set names and rule comments from
pkg/proxy/ipvs/ipset.go. The masquerade pair (KUBE-MARK-MASQ, KUBE-POSTROUTING) and KUBE-FORWARD are the same
rules as iptables mode's and are judged with iptables mode's findings (agent/checks/iptables_structure.py).

A rule is matched by fragments of its iptables-save text (`needles`) and its target, not by the whole line:
iptables-save reorders options (`! -s` first) and adds defaults (`--reject-with`).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.model import Severity

CRITICAL: Severity = "critical"
WARNING: Severity = "warning"
INFO: Severity = "info"


@dataclass(frozen=True)
class SetRule:
    table: str
    chain: str
    key: str  # names the rule in its chain (the set, or what it does): part of the finding's subject
    target: str
    needles: tuple[str, ...]  # fragments of the saved rule text; "{set}" is the family's set name
    set: str = ""  # the ipset it matches on ("" for the set-less rules around them)
    # kube-proxy writes the rule only while this set has members (ipsetWithIptablesChain, the KUBE-CLUSTER-IP,
    # external IP and acceptIPVSTraffic rules); "" : on every sync
    written_if_members: str = ""
    severity: Severity = CRITICAL
    # the sets whose members the rule serves: with all of them empty nothing is lost, so the finding is info
    serves: tuple[str, ...] = ()
    effect: str = ""
    # a KUBE-IPVS-FILTER RETURN: missing, its set's VIPs are refused (ipvs.service_ips_rejected); any other rule is
    # ipvs.iptables_rule_missing
    rejects: bool = False

    def needles_for(self, family: int) -> tuple[str, ...]:
        return tuple(n.replace("{set}", set_name(self.set, family)) for n in self.needles)


def set_name(name: str, family: int) -> str:
    """kube-proxy's IPv6 sets are named KUBE-6-..., cut at ipset's 31 characters (pkg/proxy/ipvs/ipset.go NewIPSet)."""
    if family != 6 or not name.startswith("KUBE-"):
        return name
    return ("KUBE-6-" + name[len("KUBE-"):])[:31]


_NOT_ENFORCED = "loadBalancerSourceRanges are not enforced: anyone who reaches the node can use those LoadBalancers"
_NOT_MASQUERADED = "replies from endpoints on other nodes go straight to the client, which drops them"


def _match(flags: str) -> tuple[str, ...]:
    return (f"--match-set {{set}} {flags}",)


def _node_port_rules() -> list[SetRule]:
    out: list[SetRule] = []
    for proto, local, every, flags in (
            ("tcp", "KUBE-NODE-PORT-LOCAL-TCP", "KUBE-NODE-PORT-TCP", "dst"),
            ("udp", "KUBE-NODE-PORT-LOCAL-UDP", "KUBE-NODE-PORT-UDP", "dst"),
            ("sctp", "KUBE-NODE-PORT-LOCAL-SCTP-HASH", "KUBE-NODE-PORT-SCTP-HASH", "dst,dst")):
        out.append(SetRule("nat", "KUBE-NODE-PORT", local, "RETURN", (f"-p {proto}", *_match(flags)), local, local,
                           WARNING, effect=f"{proto.upper()} NodePorts with externalTrafficPolicy Local are "
                           "masqueraded: their endpoints no longer see the client's source IP"))
        out.append(SetRule("nat", "KUBE-NODE-PORT", every, "KUBE-MARK-MASQ", (f"-p {proto}", *_match(flags)), every,
                           every, effect=f"{proto.upper()} NodePort traffic is not masqueraded: {_NOT_MASQUERADED}"))
    return out


def _external_accepts(name: str) -> list[SetRule]:
    why = "nat processing of external IP traffic no longer stops here; IPVS still serves it"
    return [SetRule("nat", "KUBE-SERVICES", f"{name}/physdev", "ACCEPT",
                    (*_match("dst,dst"), "! --physdev-is-in", "! --src-type LOCAL"), name, name, INFO, effect=why),
            SetRule("nat", "KUBE-SERVICES", f"{name}/local", "ACCEPT", (*_match("dst,dst"), "--dst-type LOCAL"),
                    name, name, INFO, effect=why)]


RULES: tuple[SetRule, ...] = (
    # nat KUBE-SERVICES ------------------------------------------------------------------------------------
    SetRule("nat", "KUBE-SERVICES", "KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER", _match("dst,dst"),
            "KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER",
            effect=f"traffic to LoadBalancer IPs is not masqueraded: {_NOT_MASQUERADED}"),
    # one of three forms by kube-proxy's settings: masqueradeAll (dst,dst), a local-traffic detector
    # (dst,dst and `! -s <cluster CIDR>` or the like), neither (src,dst)
    SetRule("nat", "KUBE-SERVICES", "KUBE-CLUSTER-IP", "KUBE-MARK-MASQ", ("--match-set {set} ",), "KUBE-CLUSTER-IP",
            "KUBE-CLUSTER-IP", WARNING, effect="off-cluster clients of ClusterIPs (and, without a cluster CIDR, the "
            f"node itself) are not masqueraded: {_NOT_MASQUERADED}"),
    SetRule("nat", "KUBE-SERVICES", "KUBE-EXTERNAL-IP", "KUBE-MARK-MASQ", _match("dst,dst"), "KUBE-EXTERNAL-IP",
            "KUBE-EXTERNAL-IP", effect=f"traffic to external IPs is not masqueraded: {_NOT_MASQUERADED}"),
    *_external_accepts("KUBE-EXTERNAL-IP"),
    *_external_accepts("KUBE-EXTERNAL-IP-LOCAL"),
    SetRule("nat", "KUBE-SERVICES", "KUBE-NODE-PORT", "KUBE-NODE-PORT", ("-m addrtype --dst-type LOCAL",),
            serves=("KUBE-NODE-PORT-TCP", "KUBE-NODE-PORT-UDP", "KUBE-NODE-PORT-SCTP-HASH"),
            effect=f"no NodePort traffic reaches KUBE-NODE-PORT, so none is masqueraded: {_NOT_MASQUERADED}"),
    SetRule("nat", "KUBE-SERVICES", "KUBE-CLUSTER-IP/accept", "ACCEPT", _match("dst,dst"), "KUBE-CLUSTER-IP",
            "KUBE-CLUSTER-IP", INFO, effect="nat processing of ClusterIP traffic no longer stops at KUBE-SERVICES "
            "(rules after it in PREROUTING/OUTPUT see it); IPVS still serves it"),
    SetRule("nat", "KUBE-SERVICES", "KUBE-LOAD-BALANCER/accept", "ACCEPT", _match("dst,dst"), "KUBE-LOAD-BALANCER",
            "KUBE-LOAD-BALANCER", INFO, effect="nat processing of LoadBalancer IP traffic no longer stops at "
            "KUBE-SERVICES; IPVS still serves it"),
    # nat KUBE-LOAD-BALANCER, KUBE-NODE-PORT, KUBE-POSTROUTING ---------------------------------------------------
    SetRule("nat", "KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER-LOCAL", "RETURN", _match("dst,dst"),
            "KUBE-LOAD-BALANCER-LOCAL", "KUBE-LOAD-BALANCER-LOCAL", WARNING, effect="LoadBalancer IPs with "
            "externalTrafficPolicy Local are masqueraded: their endpoints no longer see the client's source IP"),
    SetRule("nat", "KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ", "KUBE-MARK-MASQ", (), serves=("KUBE-LOAD-BALANCER",),
            effect=f"traffic to LoadBalancer IPs is not masqueraded: {_NOT_MASQUERADED}"),
    *_node_port_rules(),
    SetRule("nat", "KUBE-POSTROUTING", "KUBE-LOOP-BACK", "MASQUERADE", _match("dst,dst,src"), "KUBE-LOOP-BACK",
            "KUBE-LOOP-BACK", WARNING, effect="a pod that reaches itself through a Service (hairpin) is not "
            "masqueraded: it drops its own reply"),
    # filter --------------------------------------------------------------------------------------------------
    SetRule("filter", "KUBE-PROXY-FIREWALL", "KUBE-LOAD-BALANCER-FW", "KUBE-SOURCE-RANGES-FIREWALL",
            _match("dst,dst"), "KUBE-LOAD-BALANCER-FW", "KUBE-LOAD-BALANCER-FW", WARNING,
            effect=_NOT_ENFORCED),
    SetRule("filter", "KUBE-SOURCE-RANGES-FIREWALL", "KUBE-LOAD-BALANCER-SOURCE-CIDR", "RETURN",
            _match("dst,dst,src"), "KUBE-LOAD-BALANCER-SOURCE-CIDR", "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            effect="clients inside loadBalancerSourceRanges are dropped: they lose those LoadBalancers"),
    SetRule("filter", "KUBE-SOURCE-RANGES-FIREWALL", "KUBE-LOAD-BALANCER-SOURCE-IP", "RETURN",
            _match("dst,dst,src"), "KUBE-LOAD-BALANCER-SOURCE-IP", "KUBE-LOAD-BALANCER-SOURCE-IP", WARNING,
            effect="this node can no longer reach its own firewalled LoadBalancer IPs"),
    SetRule("filter", "KUBE-SOURCE-RANGES-FIREWALL", "DROP", "DROP", (), serves=("KUBE-LOAD-BALANCER-FW",),
            severity=WARNING, effect=_NOT_ENFORCED),
    SetRule("filter", "KUBE-NODE-PORT", "KUBE-HEALTH-CHECK-NODE-PORT", "ACCEPT", _match("dst"),
            "KUBE-HEALTH-CHECK-NODE-PORT", severity=INFO, effect="health check node ports are accepted only "
            "if nothing else in INPUT drops them"),
    # filter KUBE-IPVS-FILTER (kubernetes#72236): RETURN for every Service address, REJECT of the rest --------
    *(SetRule("filter", "KUBE-IPVS-FILTER", name, "RETURN", _match("dst,dst"), name, serves=(name,),
              rejects=True, effect=f"new connections to the {what} in {name} reach KUBE-IPVS-FILTER's REJECT: "
              "they are refused (from pods and other nodes; the node's own connections skip INPUT)")
      for name, what in (("KUBE-LOAD-BALANCER", "LoadBalancer IPs"), ("KUBE-CLUSTER-IP", "ClusterIPs"),
                         ("KUBE-EXTERNAL-IP", "external IPs"), ("KUBE-EXTERNAL-IP-LOCAL", "external IPs"))),
    SetRule("filter", "KUBE-IPVS-FILTER", "KUBE-HEALTH-CHECK-NODE-PORT", "RETURN", _match("dst"),
            "KUBE-HEALTH-CHECK-NODE-PORT", severity=INFO,
            effect="health check node ports on Service VIPs are refused (load balancers probe node IPs)"),
    SetRule("filter", "KUBE-IPVS-FILTER", "KUBE-IPVS-IPS", "REJECT", ("--ctstate NEW", "--match-set {set} dst"),
            "KUBE-IPVS-IPS", severity=WARNING, effect="every port this node listens on is reachable through every "
            "Service VIP on kube-ipvs0 (kubernetes#72236)"),
)
# Chains newer than IPVS mode itself: on a kube-proxy that predates them the chain is absent and its rules are
# not expected (KUBE-IPVS-FILTER: v1.28; KUBE-PROXY-FIREWALL / KUBE-SOURCE-RANGES-FIREWALL in IPVS mode: v1.26).
JUDGED_WHEN_PRESENT = frozenset({("filter", "KUBE-IPVS-FILTER"), ("filter", "KUBE-PROXY-FIREWALL"),
                                 ("filter", "KUBE-SOURCE-RANGES-FIREWALL")})
