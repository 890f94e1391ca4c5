"""Faults a person or a tool does to kube-proxy's rules, derived from a golden dump (pure: text in, faults out).

Each fault is the `iptables` command line that applies it (`-D`, `-R`, `-F`, as `iptables -t nat -D ...`
would be typed), the kind it belongs to, and the finding svcdoctor must give for it: the id and the Service
(`namespace/name:port`, kube-proxy's own servicePortName, which its rule comments carry) or node-wide
subject it names. The matrix in tests/integration/test_mutation_matrix.py applies each one to a loaded
node and checks exactly that. One fault per kind and fixture keeps the matrix inside the suite's budget;
which rule is taken is fixed (the first of its kind in the dump), so a failure reproduces.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    table: str
    chain: str
    index: int  # 1-based position in its chain, as `iptables -R CHAIN N` counts
    spec: str  # everything after `-A CHAIN`

    @property
    def comment(self) -> str:
        m = re.search(r'--comment (?:"([^"]*)"|(\S+))', self.spec)
        return (m.group(1) or m.group(2)) if m else ""

    @property
    def service(self) -> str:
        return self.comment.split(" ", 1)[0]


@dataclass(frozen=True)
class Fault:
    kind: str
    commands: tuple[tuple[str, ...], ...]  # argv after the iptables binary
    expect: tuple[str, str]  # (finding id, service or subject)
    severity: str = "warning+"  # "info": the finding is informational (traffic unchanged), nothing else may warn
    # other subjects the fault truly breaks, which may be named too (a node-wide fault kills these Services)
    also: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return self.kind


def rules(restore_text: str) -> list[Rule]:
    out: list[Rule] = []
    table, counts = "", {}
    for line in restore_text.splitlines():
        if line.startswith("*"):
            table, counts = line[1:].strip(), {}
        elif line.startswith("-A "):
            chain, _, spec = line[3:].partition(" ")
            counts[chain] = counts.get(chain, 0) + 1
            out.append(Rule(table, chain, counts[chain], spec))
    return out


def _delete(r: Rule) -> tuple[str, ...]:
    return ("-t", r.table, "-D", r.chain, *shlex.split(r.spec))


def _first(rs: list[Rule], predicate: object) -> Rule | None:
    return next((r for r in rs if predicate(r)), None)  # type: ignore[operator]


def faults(restore_text: str) -> list[Fault]:
    """One fault of each kind this dump has a rule for."""
    rs = rules(restore_text)
    out: list[Fault] = []
    dnat = _first(rs, lambda r: r.chain.startswith("KUBE-SEP-") and "-j DNAT" in r.spec)
    if dnat:
        out.append(Fault("sep_dnat_deleted", (_delete(dnat),), ("rules.endpoint_missing", dnat.service)))
        moved = re.sub(r"(--to-destination \S+:)(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) + 1000}", dnat.spec)
        out.append(Fault("dnat_port_changed", (("-t", "nat", "-R", dnat.chain, str(dnat.index), *shlex.split(moved)),),
                         ("rules.endpoint_port_mismatch", dnat.service)))
    cluster_ip = _first(rs, lambda r: r.table == "nat" and r.chain == "KUBE-SERVICES"
                        and r.comment.endswith(" cluster IP") and "-j KUBE-SVC-" in r.spec)
    if cluster_ip:
        out.append(Fault("cluster_ip_dispatch_deleted", (_delete(cluster_ip),),
                         ("rules.service_missing", cluster_ip.service)))
    affinity = {r.chain for r in rs if "--rcheck" in r.spec}  # ClientIP affinity ladders: their own kind
    ladder = _first(rs, lambda r: r.chain.startswith("KUBE-SVC-") and "--probability" in r.spec
                    and "-j KUBE-SEP-" in r.spec and r.chain not in affinity)
    if ladder:
        out.append(Fault("ladder_rung_deleted", (_delete(ladder),), ("rules.endpoint_missing", ladder.service)))
    flushed = _first(rs, lambda r: r.chain.startswith("KUBE-SVC-") and "-j KUBE-SEP-" in r.spec)
    if flushed:
        out.append(Fault("service_chain_flushed", (("-t", "nat", "-F", flushed.chain),),
                         ("rules.endpoint_missing", flushed.service)))
    reject = _first(rs, lambda r: r.table == "filter" and r.comment.endswith(" has no endpoints")
                    and "-j REJECT" in r.spec)
    if reject:
        out.append(Fault("reject_deleted", (_delete(reject),), ("rules.reject_missing", reject.service)))
    # With externalTrafficPolicy Local and no local endpoint the filter DROP stands for the same port: that
    # Service's NodePort dispatch is a kind of its own.
    dropping = {r.service for r in rs if r.comment.endswith(" has no local endpoints")}
    nodeport = _first(rs, lambda r: r.table == "nat" and r.chain == "KUBE-NODEPORTS" and "127.0.0.0/8" not in r.spec
                      and r.service not in dropping)
    if nodeport:
        out.append(Fault("nodeport_deleted", (_delete(nodeport),), ("rules.service_missing", nodeport.service)))
    out.extend(_issue17_faults(rs, dropping, affinity))
    return out


def _issue17_faults(rs: list[Rule], dropping: set[str], affinity: set[str]) -> list[Fault]:
    """The kinds issue 17 found unseen: masquerade, source ranges, traffic policy Local, affinity twins, localhost
    NodePorts, the jump to KUBE-NODEPORTS."""
    out: list[Fault] = []
    mark = _first(rs, lambda r: r.table == "nat" and r.chain == "KUBE-MARK-MASQ" and "--or-mark" in r.spec)
    if mark:
        out.append(Fault("masquerade_mark_deleted", (_delete(mark),),
                         ("iptables.masquerade_missing", "nat/KUBE-MARK-MASQ")))
    masq = _first(rs, lambda r: r.table == "nat" and r.chain == "KUBE-POSTROUTING" and "-j MASQUERADE" in r.spec)
    if masq:
        out.append(Fault("masquerade_deleted", (_delete(masq),),
                         ("iptables.masquerade_missing", "nat/KUBE-POSTROUTING")))
    allow = _first(rs, lambda r: r.chain.startswith("KUBE-FW-") and " -s " in f" {r.spec}" and "-j KUBE-EXT-" in r.spec)
    if allow:
        out.append(Fault("lb_allow_deleted", (_delete(allow),), ("rules.lb_source_range_missing", allow.service)))
    fw_drop = _first(rs, lambda r: r.table == "filter" and r.chain == "KUBE-PROXY-FIREWALL" and "-j DROP" in r.spec)
    if fw_drop:
        # KUBE-FW still keeps outside clients from the Service: no packet reaches it that did not before
        out.append(Fault("lb_drop_deleted", (_delete(fw_drop),),
                         ("rules.lb_source_ranges_not_enforced", fw_drop.service), severity="info"))
    local_drop = _first(rs, lambda r: r.table == "filter" and r.comment.endswith(" has no local endpoints"))
    if local_drop:
        out.append(Fault("local_drop_deleted", (_delete(local_drop),), ("rules.reject_missing", local_drop.service)))
    # traffic policy Local without a local endpoint: the nat dispatch node-local clients still take
    ext = _first(rs, lambda r: r.table == "nat" and r.chain == "KUBE-SERVICES" and r.service in dropping
                 and r.comment.endswith((" external IP", " loadbalancer IP")))
    if ext:
        out.append(Fault("local_external_dispatch_deleted", (_delete(ext),), ("rules.service_missing", ext.service)))
    local_np = _first(rs, lambda r: r.table == "nat" and r.chain == "KUBE-NODEPORTS" and r.service in dropping
                      and "127.0.0.0/8" not in r.spec)
    if local_np:
        out.append(Fault("local_nodeport_deleted", (_delete(local_np),), ("rules.service_missing", local_np.service)))
    rung = _first(rs, lambda r: r.chain in affinity and "-j KUBE-SEP-" in r.spec and "--rcheck" not in r.spec)
    if rung:
        out.append(Fault("affinity_rung_deleted", (_delete(rung),), ("rules.endpoint_missing", rung.service)))
    twin = _first(rs, lambda r: r.table == "nat" and r.chain == "KUBE-NODEPORTS" and "127.0.0.0/8" in r.spec)
    if twin:
        out.append(Fault("localhost_twin_deleted", (_delete(twin),),
                         ("rules.localhost_node_port_missing", twin.service), severity="info"))
    jump = _first(rs, lambda r: r.table == "nat" and r.chain == "KUBE-SERVICES" and "-j KUBE-NODEPORTS" in r.spec)
    if jump:
        killed = frozenset(r.service for r in rs if r.table == "nat" and r.chain == "KUBE-NODEPORTS")
        out.append(Fault("nodeports_jump_deleted", (_delete(jump),),
                         ("iptables.nodeports_jump_missing", "nat/KUBE-SERVICES"), also=killed))
    return out


# Hooks come from node-base.rules (kube-proxy's `iptables -I` jumps), the same on every IPv4 fixture.
HOOK = Fault("hook_deleted", (("-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment",
                               "kubernetes service portals", "-j", "KUBE-SERVICES"),),
             ("iptables.hook_missing", "nat/PREROUTING"))


# Node-wide faults on the chains around kube-proxy's Service rules (issue 17.6): the same on every IPv4 node, so
# applied to one fixture.
_FORWARD_ACCEPT = ("-m", "comment", "--comment", "kubernetes forwarding rules", "-m", "mark", "--mark",
                   "0x4000/0x4000", "-j", "ACCEPT")
NODE_WIDE = (
    Fault("proxy_canary_deleted", (("-t", "nat", "-X", "KUBE-PROXY-CANARY"),),
          ("iptables.canary_missing", "nat/KUBE-PROXY-CANARY")),
    Fault("kubelet_canary_deleted", (("-t", "mangle", "-X", "KUBE-KUBELET-CANARY"),),
          ("iptables.canary_missing", "mangle/KUBE-KUBELET-CANARY")),
    Fault("forward_accept_deleted_policy_drop", (("-t", "filter", "-P", "FORWARD", "DROP"),
                                                 ("-t", "filter", "-D", "KUBE-FORWARD", *_FORWARD_ACCEPT)),
          ("iptables.forward_accept_missing", "filter/FORWARD")),
    Fault("localnet_block_deleted", (("-t", "filter", "-D", "KUBE-FIREWALL", "-m", "comment", "--comment",
                                      "block incoming localnet connections", "-d", "127.0.0.0/8", "!", "-s",
                                      "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate",
                                      "RELATED,ESTABLISHED,DNAT", "-j", "DROP"),),
          ("iptables.localnet_block_missing", "filter/KUBE-FIREWALL")),
)
# A control: kube-proxy's FORWARD accept deleted while FORWARD accepts everything anyway changes no packet.
FORWARD_ACCEPT_DELETED_POLICY_ACCEPT = (("-t", "filter", "-D", "KUBE-FORWARD", *_FORWARD_ACCEPT),)


def reordered_dispatch(restore_text: str) -> tuple[tuple[str, ...], ...] | None:
    """A control: the last Service dispatch rule moved to the top of KUBE-SERVICES. kube-proxy's order of
    Services is not a contract (its tests sort them), so nothing may be reported."""
    rs = [r for r in rules(restore_text) if r.table == "nat" and r.chain == "KUBE-SERVICES"
          and "-j KUBE-NODEPORTS" not in r.spec]
    if len(rs) < 2:
        return None
    last = rs[-1]
    return (_delete(last), ("-t", "nat", "-I", "KUBE-SERVICES", "1", *shlex.split(last.spec)))
