"""Dual-stack (issue 17 item 5): a node with an IPv4 and an IPv6 address, where kube-proxy runs a proxier per
family, and a dual-stack Service (ipFamilies [IPv4, IPv6], a clusterIP of each, one EndpointSlice per addressType).

iptables mode: the IPv4 rules are kube-proxy's v1.28 TestEnableLocalhostNodePortsIPv4 dump, the IPv6 rules its
TestEnableLocalhostNodePortsIPv6 dump: the same Service (ns1/svc1:p80, NodePort 30001, externalTrafficPolicy Local)
programmed by each family's proxier (tests/fixtures/kube-proxy-dualstack/README.md). Each family is judged on its
own: a fault in one family's rules gives its finding for the Service with that family in the evidence, and nothing
about the other family; a node with no IPv6 address is not judged on IPv6 rules at all.

nftables mode: both tables (`table ip kube-proxy`, `table ip6 kube-proxy`) on one node. No pair of nftables dumps
programs the same Service in both families (see the fixture README), so the two tables are judged from the node
alone (`--no-api`): a fault in one table is named with that table's family, nothing about the other.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.integration.test_nftables import NFT
from tests.mutations import HOOK, Fault, faults
from tests.nft_mutations import NftFault
from tests.nft_mutations import faults as nft_faults
from tests.testbed import DATA, FIXTURES, REPO, Node, problems

pytestmark = pytest.mark.netns

DUAL = REPO / "tests" / "fixtures" / "kube-proxy-dualstack"
IP6 = REPO / "tests" / "fixtures" / "kube-proxy-ipv6" / "ip6tables"
SUP6 = REPO / "tests" / "fixtures" / "kube-proxy-ipv6" / "nftables-supplementary"
V4 = DUAL / "v1.28_TestEnableLocalhostNodePortsIPv4.rules"
V6 = IP6 / "v1.28_TestEnableLocalhostNodePortsIPv6.rules"
STATE = DUAL / "dualstack-iptables.cluster.json"
NFT4 = NFT / "v1.3x_TestOverallNFTablesRules.nft"
NFT6 = SUP6 / "knftables_TestFakeParseDump_IPv6_kube-proxy_example.nft"
BACKENDS = ("legacy", "nft")
SERVICE = "ns1/svc1:p80"


def addresses(node: Node, *cidrs: str) -> None:
    """The node's addresses on eth0 (a veth: this kernel has no dummy module); its peer stays in the netns."""
    node.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    for link in ("eth0", "eth1"):
        node.sh("ip", "link", "set", link, "up")
    for cidr in cidrs:
        node.sh("ip", "addr", "add", cidr, "dev", "eth0", *(["nodad"] if ":" in cidr else []))


def dual_node(node: Node, backend: str, *, ipv6_address: bool = True, ipv6_rules: str | None = None) -> None:
    """kube-proxy (iptables mode) and kubelet as on kubeadm; both families' rules and the node around them
    (node-base.rules, node-base6.rules); forwarding on for both, route_localnet for IPv4's localhost NodePorts.
    `ipv6_rules`: instead of IPv6's, these ip6tables rules alone."""
    addresses(node, "192.168.0.2/24", *(["2001:db8::1/64"] if ipv6_address else []))
    node.healthy_basics()
    node.sysctl("net.ipv6.conf.all.forwarding", 1)
    node.kube_proxy("--hostname-override=test-hostname", config=DATA / "kubeadm" / "kube-proxy-config.conf")
    node.kubelet("--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
                 config=DATA / "kubeadm" / "kubelet-config.yaml")
    node.kube_proxy_http()
    node.iptables_restore(V4.read_text(), backend, noflush=True)
    node.iptables_restore((FIXTURES / "iptables" / "node-base.rules").read_text(), backend, noflush=True)
    if ipv6_rules is not None:
        node.iptables_restore(ipv6_rules, backend, noflush=True, family=6)
        return
    node.iptables_restore(V6.read_text(), backend, noflush=True, family=6)
    node.iptables_restore((IP6 / "node-base6.rules").read_text(), backend, noflush=True, family=6)


def check(node: Node) -> dict[str, Any]:
    _, doc = node.check("--cluster-state", str(STATE), "--node-name", "test-hostname", "--grace", "0")
    return doc


def families_named(doc: dict[str, Any]) -> set[int]:
    """The families the warning and critical findings say they are about: each says it (evidence "family")."""
    loud = [f for f in doc["findings"] if f["severity"] != "info"]
    assert all("family" in f["evidence"] for f in loud), loud
    return {int(f["evidence"]["family"]) for f in loud}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_dual_stack_node_with_both_proxiers_rules_is_healthy(node: Node, backend: str) -> None:
    dual_node(node, backend)
    doc = check(node)
    assert problems(doc) == set()
    # The one info: kube-proxy v1.3x (the stand-in's version) adds a `-d 127.0.0.0/8` twin to each IPv4 NodePort
    # rule; this v1.28 dump predates it. Traffic is the same (the general rule matches 127.0.0.1 too).
    assert {(f["id"], f["evidence"].get("family")) for f in doc["findings"] if f["id"].startswith("rules.")} == {
        ("rules.localhost_node_port_missing", 4)}


CASES = [(4, f) for f in [*faults(V4.read_text()), HOOK]] + [(6, f) for f in [*faults(V6.read_text()), HOOK]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("family", "fault"), CASES, ids=[f"ipv{f}-{x}" for f, x in CASES])
def test_a_fault_in_one_familys_rules_is_reported_for_that_family_only(node: Node, backend: str, family: int,
                                                                      fault: Fault) -> None:
    dual_node(node, backend)
    tool = f"{'ip6tables' if family == 6 else 'iptables'}-{backend}"
    for argv in fault.commands:
        node.sh(tool, "-w", "60", *argv)
    doc = check(node)
    found = problems(doc)
    assert fault.expect in found, f"{fault.kind}: {found}"
    assert {s for _, s in found} <= {fault.expect[1], *fault.also}, f"{fault.kind} also blamed: {found}"
    assert families_named(doc) == {family}, doc["findings"]
    for f in doc["findings"]:
        if f["id"] in ("rules.endpoint_missing", "rules.endpoint_port_mismatch"):
            assert f["evidence"]["endpoint"].startswith("[ff06::c" if family == 6 else "10.244."), f["evidence"]


def test_the_ipv6_cluster_ip_of_a_dual_stack_service_without_rules_is_reported(node: Node) -> None:
    """The IPv6 half of the Service is not programmed at all (kube-proxy's IPv6 proxier never wrote it): its
    cluster IP and node port are reported missing for IPv6, the IPv4 half is healthy."""
    dual_node(node, "nft")
    for argv in (("-t", "nat", "-F", "KUBE-SERVICES"), ("-t", "nat", "-F", "KUBE-NODEPORTS")):
        node.sh("ip6tables-nft", "-w", "60", *argv)
    doc = check(node)
    missing = [f for f in doc["findings"] if f["id"] == "rules.service_missing"]
    assert {(f["service"], f["evidence"]["family"], f["evidence"]["address"]) for f in missing} >= {
        (SERVICE, 6, "[fd00:ab34::20]:80")}
    assert families_named(doc) == {6}
    assert all(f["severity"] == "critical" for f in missing)


# What kubelet alone writes to ip6tables (its hint and canaries, for both families): the IPv6 proxier wrote nothing.
KUBELET_ONLY6 = """*mangle
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*nat
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*filter
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_dual_stack_node_whose_ipv6_proxier_wrote_nothing_reports_the_ipv6_half(node: Node, backend: str) -> None:
    """ip6tables read whole with no kube-proxy chain in it, on a node with an IPv6 address: the Service's IPv6
    cluster IP and node port are missing (for IPv6); its IPv4 half, programmed, gives nothing."""
    dual_node(node, backend, ipv6_rules=KUBELET_ONLY6)
    doc = check(node)
    missing = {(f["service"], f["evidence"]["family"], f["evidence"]["kind"], f["evidence"]["address"])
               for f in doc["findings"] if f["id"] == "rules.service_missing"}
    assert missing == {(SERVICE, 6, "cluster_ip", "[fd00:ab34::20]:80"), (SERVICE, 6, "node_port", ":30001")}
    assert problems(doc) == {("rules.service_missing", SERVICE)}
    assert families_named(doc) == {6}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_node_without_an_ipv6_address_is_not_judged_on_ipv6_rules(node: Node, backend: str) -> None:
    """kube-proxy runs no IPv6 proxier on a node with no IPv6 address: whatever ip6tables holds (here the IPv6
    half of the Service, then with its cluster IP dispatch deleted) is not judged; IPv4 still is."""
    dual_node(node, backend, ipv6_address=False)
    assert problems(check(node)) == set()
    (gone,) = [f for f in faults(V6.read_text()) if f.kind == "cluster_ip_dispatch_deleted"]
    for argv in gone.commands:
        node.sh(f"ip6tables-{backend}", "-w", "60", *argv)
    assert problems(check(node)) == set()
    (v4,) = [f for f in faults(V4.read_text()) if f.kind == "cluster_ip_dispatch_deleted"]
    for argv in v4.commands:
        node.sh(f"iptables-{backend}", "-w", "60", *argv)
    doc = check(node)
    assert problems(doc) == {("rules.service_missing", SERVICE)} and families_named(doc) == {4}


# nftables mode: both tables, judged per table from the node alone ---------------------------------------------
def dual_nft_node(node: Node, *, ip6_table: bool = True, ipv6_address: bool = True) -> None:
    addresses(node, "192.168.0.2/24", *(["2001:db8::1/64"] if ipv6_address else []))
    node.healthy_basics()
    node.sysctl("net.ipv6.conf.all.forwarding", 1)
    node.nft_load(NFT4.read_text())
    if ip6_table:
        node.nft_load(NFT6.read_text())
    node.kube_proxy("--proxy-mode=nftables", "--hostname-override=test-node")
    node.kubelet("--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
                 config=DATA / "kubeadm" / "kubelet-config.yaml")
    node.kube_proxy_http("--mode", "nftables", "--version", "v1.33.1")


# the faults the node alone shows (rules and chains; a deleted map element needs the API to be missed)
NFT_CASES = [("ip", f) for f in nft_faults(NFT4.read_text(), "ip") if f.element is None] + \
            [("ip6", f) for f in nft_faults(NFT6.read_text(), "ip6") if f.element is None]


def test_each_nftables_kind_is_tried_on_each_table() -> None:
    """(pins the per-table cases below: each kind on each table)"""
    assert {(fam, f.kind) for fam, f in NFT_CASES} == {(fam, k) for fam in ("ip", "ip6") for k in (
        "mark_for_masquerade_deleted", "masquerade_rule_deleted", "hook_chain_deleted", "endpoint_dnat_deleted")}


def delete_rule(node: Node, family: str, chain: str, text: str) -> None:
    listing = node.sh("nft", "-a", "list", "chain", family, "kube-proxy", chain).stdout
    (line,) = [ln for ln in listing.splitlines() if text in ln]
    m = re.search(r"# handle (\d+)", line)
    assert m, line
    node.sh("nft", "delete", "rule", family, "kube-proxy", chain, "handle", m.group(1))


@pytest.mark.parametrize(("family", "fault"), NFT_CASES, ids=[f"{f}-{x}" for f, x in NFT_CASES])
def test_an_nftables_fault_in_one_table_names_that_table_only(node: Node, family: str, fault: NftFault) -> None:
    dual_nft_node(node)
    _, clean = node.check("--no-api")
    assert problems(clean) == set()
    if fault.rule is not None:
        delete_rule(node, family, *fault.rule)
    if fault.chain is not None:
        node.sh("nft", "delete", "chain", family, "kube-proxy", fault.chain)
    _, doc = node.check("--no-api")
    # without the API the endpoint chain that no longer DNATs is seen from its structure
    expect = ("nftables.endpoint_chain_broken", fault.expect[1]) if fault.kind == "endpoint_dnat_deleted" \
        else fault.expect
    assert problems(doc) == {expect}
    assert {f["evidence"]["family"] for f in doc["findings"] if f["severity"] != "info"} == {family}


def test_a_dual_stack_node_in_nftables_mode_without_its_ip6_table_is_table_missing_for_ipv6(node: Node) -> None:
    dual_nft_node(node, ip6_table=False)
    _, doc = node.check("--no-api")
    assert problems(doc) == {("nftables.table_missing", "test-node")}
    (f,) = [f for f in doc["findings"] if f["id"] == "nftables.table_missing"]
    assert f["evidence"]["family"] == "ip6"


def test_an_ip6_table_on_a_node_without_an_ipv6_address_is_not_judged(node: Node) -> None:
    dual_nft_node(node, ipv6_address=False)
    delete_rule(node, "ip6", "masquerading", "masquerade")
    _, doc = node.check("--no-api")
    assert problems(doc) == set()
    delete_rule(node, "ip", "masquerading", "masquerade")
    _, doc = node.check("--no-api")
    assert problems(doc) == {("nftables.masquerade_missing", "table ip kube-proxy: masquerading")}
