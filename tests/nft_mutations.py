"""Faults in kube-proxy's nftables table, derived from a golden `.nft` file (pure: text in, faults out).

Each fault is what a person or a tool would type: `nft delete element ip kube-proxy MAP { KEY }` for a map
element, `nft delete rule ip kube-proxy CHAIN handle N` for a rule (the handle is looked up on the loaded node
by the rule's text, as `nft -a list chain` shows it). As in tests/mutations.py: one fault per kind and fixture,
the first rule or element of its kind (or a whole
base chain, `nft delete chain`), and the finding (id, Service or subject) it must give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ELEMENT = re.compile(r'^add element ip6? kube-proxy (\S+) \{ (.*?)(?: comment "([^"]*)")? : (.*) \}$')
_RULE = re.compile(r"^add rule ip6? kube-proxy (\S+) (.*)$")
# a Service port's chain (an endpoint chain's name goes on with "__<endpoint>")
_SERVICE_CHAIN = re.compile(
    r"^(?:service|external|firewall|local|endpoint)-[A-Z2-7]{8}-([^/]+)/([^/]+)/[^/]+/([^_\s]*)(?:__\S*)?$")


@dataclass(frozen=True)
class NftFault:
    kind: str
    expect: tuple[str, str]  # (finding id, service or subject)
    element: tuple[str, str] | None = None  # (map, key) to delete
    rule: tuple[str, str] | None = None  # (chain, a text the rule's listing contains) to delete by handle
    chain: str | None = None  # a chain to delete whole (`nft delete chain`): only one nothing jumps to, a base chain

    def __str__(self) -> str:
        return self.kind


def _service_of(target: str) -> str:
    m = _SERVICE_CHAIN.match(target.split()[-1])
    if not m:
        return ""
    ns, name, port = m.groups()
    return f"{ns}/{name}:{port}" if port else f"{ns}/{name}"


def faults(nft_text: str, family: str = "ip") -> list[NftFault]:
    elements: list[tuple[str, str, str | None, str]] = []  # (map, key, comment, verdict)
    rules: list[tuple[str, str]] = []
    for line in nft_text.splitlines():
        m = _ELEMENT.match(line)
        if m:
            elements.append((m.group(1), m.group(2), m.group(3), m.group(4)))
            continue
        r = _RULE.match(line)
        if r:
            rules.append((r.group(1), r.group(2)))
    out: list[NftFault] = []
    # ports whose outside clients are dropped (traffic policy Local, no local endpoint) while the rest is dispatched
    dropping = {c for m, _, c, v in elements if m.startswith("no-endpoint-") and v == "drop" and c}
    cluster_ip = next(((k, v) for m, k, _, v in elements if m == "service-ips" and "goto service-" in v), None)
    if cluster_ip:
        out.append(NftFault("cluster_ip_element_deleted", ("rules.service_missing", _service_of(cluster_ip[1])),
                            element=("service-ips", cluster_ip[0])))
    nodeport = next(((k, v) for m, k, _, v in elements if m == "service-nodeports"
                     and _service_of(v) not in dropping), None)
    if nodeport:
        out.append(NftFault("nodeport_element_deleted", ("rules.service_missing", _service_of(nodeport[1])),
                            element=("service-nodeports", nodeport[0])))
    reject = next(((k, c) for m, k, c, v in elements if m == "no-endpoint-services" and "reject" in v and c), None)
    if reject:
        out.append(NftFault("reject_element_deleted", ("rules.reject_missing", reject[1]),
                            element=("no-endpoint-services", reject[0])))
    for map_name, kind in (("no-endpoint-services", "local_drop_element_deleted"),
                           ("no-endpoint-nodeports", "local_nodeport_drop_element_deleted")):
        drop = next(((k, c) for m, k, c, v in elements if m == map_name and v == "drop" and c), None)
        if drop:
            out.append(NftFault(kind, ("rules.reject_missing", drop[1]), element=(map_name, drop[0])))
    ext = next(((k, v) for m, k, _, v in elements if m == "service-ips" and "goto external-" in v
                and _service_of(v) in dropping), None)
    if ext:
        out.append(NftFault("local_external_element_deleted", ("rules.service_missing", _service_of(ext[1])),
                            element=("service-ips", ext[0])))
    local_np = next(((k, v) for m, k, _, v in elements if m == "service-nodeports" and _service_of(v) in dropping),
                    None)
    if local_np:
        out.append(NftFault("local_nodeport_element_deleted", ("rules.service_missing", _service_of(local_np[1])),
                            element=("service-nodeports", local_np[0])))
    fw = next(((k, v) for m, k, _, v in elements if m == "firewall-ips"), None)
    if fw:
        out.append(NftFault("firewall_element_deleted", ("rules.lb_source_ranges_not_enforced", _service_of(fw[1])),
                            element=("firewall-ips", fw[0])))
    # An endpoint chain's DNAT deleted: the chain is still chosen, and sends the packet on un-NATed.
    dnat = next(((c, t) for c, t in rules if c.startswith("endpoint-") and " dnat to " in f" {t}"), None)
    if dnat:
        out.append(NftFault("endpoint_dnat_deleted", ("rules.endpoint_missing", _service_of(dnat[0])),
                            rule=(dnat[0], "dnat to")))
    subject = f"table {family} kube-proxy: "
    if any(c == "mark-for-masquerade" for c, _ in rules):
        out.append(NftFault("mark_for_masquerade_deleted",
                            ("nftables.masquerade_missing", subject + "mark-for-masquerade"),
                            rule=("mark-for-masquerade", "mark set")))
    if any(c == "masquerading" and t.startswith("masquerade") for c, t in rules):
        out.append(NftFault("masquerade_rule_deleted", ("nftables.masquerade_missing", subject + "masquerading"),
                            rule=("masquerading", "masquerade")))
    # A base chain deleted (`nft delete chain ... nat-prerouting`, as a cleanup script might): nothing DNATs
    # traffic arriving from outside any more. Base chains are hooked, never jumped to, so the kernel lets it go.
    if re.search(rf"^add chain {family} kube-proxy nat-prerouting ", nft_text, re.M):
        out.append(NftFault("hook_chain_deleted", ("nftables.hook_missing", subject + "nat prerouting"),
                            chain="nat-prerouting"))
    return out
