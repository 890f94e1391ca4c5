"""Faults in IPVS mode's iptables rules (tests/fixtures/kube-proxy/ipvs/overall.rules): each rule svcdoctor
judges, deleted the way a person would (`iptables -t T -D CHAIN <rule>`), with the finding it must give.

Pure: the rule is looked up in the fixture's restore input by a fragment of it, so the `-D` carries kube-proxy's
exact spelling. Used by the unit tests (the rule removed from the saved text) and the netns matrix (deleted with
iptables on a loaded node).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.mutations import Rule, _delete, rules
from tests.testbed import FIXTURES

IPVS = FIXTURES / "ipvs"
RESTORE = (IPVS / "overall.rules").read_text()
MISSING, REJECTED, MASQ = "ipvs.iptables_rule_missing", "ipvs.service_ips_rejected", "iptables.masquerade_missing"


@dataclass(frozen=True)
class IpvsFault:
    kind: str
    rule: Rule
    expect: tuple[str, str]  # (finding id, subject)
    severity: str

    @property
    def command(self) -> tuple[str, ...]:
        return _delete(self.rule)

    @property
    def saved_line(self) -> str:
        return f"-A {self.rule.chain} {self.rule.spec}"

    def __str__(self) -> str:
        return self.kind


def _rule(table: str, chain: str, fragment: str) -> Rule:
    (hit,) = [r for r in rules(RESTORE) if r.table == table and r.chain == chain and fragment in f"{r.spec} "]
    return hit


# (kind, table, chain, fragment of the rule, finding id, subject, severity)
_TABLE = (
    ("lb_portal", "nat", "KUBE-SERVICES", "KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER", MISSING,
     "nat/KUBE-SERVICES/KUBE-LOAD-BALANCER", "critical"),
    ("cluster_ip_masquerade", "nat", "KUBE-SERVICES", "KUBE-CLUSTER-IP dst,dst ! -s", MISSING,
     "nat/KUBE-SERVICES/KUBE-CLUSTER-IP", "warning"),
    ("external_ip_masquerade", "nat", "KUBE-SERVICES", "KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ", MISSING,
     "nat/KUBE-SERVICES/KUBE-EXTERNAL-IP", "critical"),
    ("external_ip_accept_offnode", "nat", "KUBE-SERVICES", "KUBE-EXTERNAL-IP dst,dst -m physdev", MISSING,
     "nat/KUBE-SERVICES/KUBE-EXTERNAL-IP/physdev", "info"),
    ("external_ip_accept_local", "nat", "KUBE-SERVICES", "KUBE-EXTERNAL-IP dst,dst -m addrtype --dst", MISSING,
     "nat/KUBE-SERVICES/KUBE-EXTERNAL-IP/local", "info"),
    ("external_ip_local_accept_offnode", "nat", "KUBE-SERVICES", "KUBE-EXTERNAL-IP-LOCAL dst,dst -m physdev",
     MISSING, "nat/KUBE-SERVICES/KUBE-EXTERNAL-IP-LOCAL/physdev", "info"),
    ("node_port_jump", "nat", "KUBE-SERVICES", "--dst-type LOCAL -j KUBE-NODE-PORT", MISSING,
     "nat/KUBE-SERVICES/KUBE-NODE-PORT", "critical"),
    ("cluster_ip_accept", "nat", "KUBE-SERVICES", "KUBE-CLUSTER-IP dst,dst -j ACCEPT", MISSING,
     "nat/KUBE-SERVICES/KUBE-CLUSTER-IP/accept", "info"),
    ("lb_local_return", "nat", "KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER-LOCAL", MISSING,
     "nat/KUBE-LOAD-BALANCER/KUBE-LOAD-BALANCER-LOCAL", "warning"),
    ("lb_mark", "nat", "KUBE-LOAD-BALANCER", "-j KUBE-MARK-MASQ ", MISSING,
     "nat/KUBE-LOAD-BALANCER/KUBE-MARK-MASQ", "critical"),
    ("node_port_local_return", "nat", "KUBE-NODE-PORT", "KUBE-NODE-PORT-LOCAL-TCP", MISSING,
     "nat/KUBE-NODE-PORT/KUBE-NODE-PORT-LOCAL-TCP", "warning"),
    ("node_port_mark", "nat", "KUBE-NODE-PORT", "KUBE-NODE-PORT-TCP dst", MISSING,
     "nat/KUBE-NODE-PORT/KUBE-NODE-PORT-TCP", "critical"),
    ("hairpin_masquerade", "nat", "KUBE-POSTROUTING", "KUBE-LOOP-BACK", MISSING,
     "nat/KUBE-POSTROUTING/KUBE-LOOP-BACK", "warning"),
    ("masquerade", "nat", "KUBE-POSTROUTING", "-j MASQUERADE --random-fully", MASQ, "nat/KUBE-POSTROUTING",
     "critical"),
    ("masquerade_mark", "nat", "KUBE-MARK-MASQ", "--or-mark", MASQ, "nat/KUBE-MARK-MASQ", "critical"),
    ("source_ranges_jump", "filter", "KUBE-PROXY-FIREWALL", "KUBE-LOAD-BALANCER-FW", MISSING,
     "filter/KUBE-PROXY-FIREWALL/KUBE-LOAD-BALANCER-FW", "warning"),
    ("source_cidr_return", "filter", "KUBE-SOURCE-RANGES-FIREWALL", "KUBE-LOAD-BALANCER-SOURCE-CIDR", MISSING,
     "filter/KUBE-SOURCE-RANGES-FIREWALL/KUBE-LOAD-BALANCER-SOURCE-CIDR", "critical"),
    ("source_ip_return", "filter", "KUBE-SOURCE-RANGES-FIREWALL", "KUBE-LOAD-BALANCER-SOURCE-IP", MISSING,
     "filter/KUBE-SOURCE-RANGES-FIREWALL/KUBE-LOAD-BALANCER-SOURCE-IP", "warning"),
    ("source_ranges_drop", "filter", "KUBE-SOURCE-RANGES-FIREWALL", "-j DROP", MISSING,
     "filter/KUBE-SOURCE-RANGES-FIREWALL/DROP", "warning"),
    ("health_check_accept", "filter", "KUBE-NODE-PORT", "KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT", MISSING,
     "filter/KUBE-NODE-PORT/KUBE-HEALTH-CHECK-NODE-PORT", "info"),
    ("filter_lb_return", "filter", "KUBE-IPVS-FILTER", "KUBE-LOAD-BALANCER dst,dst -j RETURN", REJECTED,
     "filter/KUBE-IPVS-FILTER/KUBE-LOAD-BALANCER", "critical"),
    ("filter_cluster_ip_return", "filter", "KUBE-IPVS-FILTER", "KUBE-CLUSTER-IP dst,dst -j RETURN", REJECTED,
     "filter/KUBE-IPVS-FILTER/KUBE-CLUSTER-IP", "critical"),
    ("filter_external_ip_return", "filter", "KUBE-IPVS-FILTER", "KUBE-EXTERNAL-IP dst,dst -j RETURN", REJECTED,
     "filter/KUBE-IPVS-FILTER/KUBE-EXTERNAL-IP", "critical"),
    ("filter_external_ip_local_return", "filter", "KUBE-IPVS-FILTER", "KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN",
     REJECTED, "filter/KUBE-IPVS-FILTER/KUBE-EXTERNAL-IP-LOCAL", "critical"),
    ("filter_health_check_return", "filter", "KUBE-IPVS-FILTER", "KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN",
     MISSING, "filter/KUBE-IPVS-FILTER/KUBE-HEALTH-CHECK-NODE-PORT", "info"),
    ("filter_reject", "filter", "KUBE-IPVS-FILTER", "-j REJECT", MISSING, "filter/KUBE-IPVS-FILTER/KUBE-IPVS-IPS",
     "warning"),
)
FAULTS = tuple(IpvsFault(kind, _rule(table, chain, fragment), (fid, subject), severity)
               for kind, table, chain, fragment, fid, subject, severity in _TABLE)
