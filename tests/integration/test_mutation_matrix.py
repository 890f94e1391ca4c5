"""The mutation matrix: every kind of fault in kube-proxy's rules, applied to every golden dump it fits, on
both iptables backends, must give its finding attributed to the right Service; controls must stay silent.

Faults are generated from the dumps (tests/mutations.py) and applied with the `iptables` commands a
person or a tool would use, on a node loaded in a private network namespace; the check runs with the
dump's own cluster state and `--grace 0`. Cases are independent, so xdist spreads them over the workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_nftables import FIXTURE_NAMES as NFT_FIXTURES
from tests.integration.test_nftables import NFT, handle_of, nftables_node
from tests.integration.test_nftables import check as nft_check
from tests.integration.test_rules_iptables import FULL, IPT, OVERALL, check_with, items_of, load
from tests.mutations import FORWARD_ACCEPT_DELETED_POLICY_ACCEPT, HOOK, NODE_WIDE, Fault, faults, reordered_dispatch
from tests.nft_mutations import NftFault
from tests.nft_mutations import faults as nft_faults
from tests.testbed import DATA, REPO, Node, problems

SUP6 = REPO / "tests" / "fixtures" / "kube-proxy-ipv6" / "nftables-supplementary"

BACKENDS = ("legacy", "nft")
CASES = [(fixture, fault) for fixture in FULL for fault in [*faults((IPT / f"{fixture}.rules").read_text()), HOOK]]
CASES += [("v1.3x_TestOverallIPTablesRules", fault) for fault in NODE_WIDE]


def apply(node: Node, backend: str, commands: tuple[tuple[str, ...], ...]) -> None:
    for argv in commands:
        node.sh(f"iptables-{backend}", "-w", "60", *argv)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("fixture", "fault"), CASES, ids=[f"{f}-{x}" for f, x in CASES])
def test_fault_gives_its_finding_for_its_service(node: Node, tmp_path: Path, fixture: str, fault: Fault,
                                                 backend: str) -> None:
    load(node, fixture, backend)
    apply(node, backend, fault.commands)
    doc = check_with(node, fixture, tmp_path, grace="0")
    found = problems(doc)
    if fault.severity == "info":  # traffic unchanged: said, but nothing warns
        assert fault.expect in {(f["id"], f["service"] or f["subject"]) for f in doc["findings"]}, fault.kind
        assert found == set(), f"{fault.kind}: {found}"
        return
    assert fault.expect in found, f"{fault.kind}: {found}"
    subject = fault.expect[1]
    # Attribution: every finding names the Service the fault hit (or, for a node-wide fault, the node's chains and
    # the Services it kills).
    assert subject in {s for _, s in found}
    assert {s for _, s in found} <= {subject, *fault.also}, f"{fault.kind} also blamed: {found}"


def test_every_kind_appears_in_the_matrix() -> None:
    kinds = {fault.kind for _, fault in CASES}
    assert kinds >= {"sep_dnat_deleted", "dnat_port_changed", "cluster_ip_dispatch_deleted", "ladder_rung_deleted",
                     "service_chain_flushed", "reject_deleted", "nodeport_deleted", "hook_deleted",
                     # issue 17
                     "masquerade_mark_deleted", "masquerade_deleted", "lb_allow_deleted", "lb_drop_deleted",
                     "local_drop_deleted", "local_external_dispatch_deleted", "local_nodeport_deleted",
                     "affinity_rung_deleted", "localhost_twin_deleted", "nodeports_jump_deleted",
                     "proxy_canary_deleted", "kubelet_canary_deleted", "forward_accept_deleted_policy_drop",
                     "localnet_block_deleted"}


CONTROLS = [f for f in FULL if reordered_dispatch((IPT / f"{f}.rules").read_text())]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fixture", CONTROLS)
def test_reordered_dispatch_is_silent(node: Node, tmp_path: Path, fixture: str, backend: str) -> None:
    load(node, fixture, backend)
    commands = reordered_dispatch((IPT / f"{fixture}.rules").read_text())
    assert commands is not None
    apply(node, backend, commands)
    assert problems(check_with(node, fixture, tmp_path, grace="0")) == set()


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_accept_deleted_under_an_accept_policy_is_silent(node: Node, tmp_path: Path, backend: str) -> None:
    load(node, OVERALL, backend)
    apply(node, backend, FORWARD_ACCEPT_DELETED_POLICY_ACCEPT)
    assert problems(check_with(node, OVERALL, tmp_path, grace="0")) == set()


# nftables mode ------------------------------------------------------------------------------------------------
# kube-proxy's own nftables tables (tests/fixtures/kube-proxy/nftables/*.nft) loaded with `nft -f`, faults made with
# `nft delete element` / `nft delete rule ... handle N`, checked with the fixture's cluster state and `--grace 0`.
NFT_CASES = [(name, fault) for name in NFT_FIXTURES for fault in nft_faults((NFT / f"{name}.nft").read_text())]


def apply_nft(node: Node, fault: NftFault, family: str = "ip") -> None:
    if fault.element is not None:
        map_name, key = fault.element
        node.sh("nft", "delete", "element", family, "kube-proxy", map_name, f"{{ {key} }}")
    if fault.rule is not None:
        chain, text = fault.rule
        node.sh("nft", "delete", "rule", family, "kube-proxy", chain, "handle",
                handle_of(node, chain, text, family))
    if fault.chain is not None:
        node.sh("nft", "delete", "chain", family, "kube-proxy", fault.chain)


@pytest.mark.parametrize(("fixture", "fault"), NFT_CASES, ids=[f"{f}-{x}" for f, x in NFT_CASES])
def test_nftables_fault_gives_its_finding_for_its_service(node: Node, fixture: str, fault: NftFault) -> None:
    nftables_node(node, fixture)
    apply_nft(node, fault)
    found = problems(nft_check(node, fixture))
    assert fault.expect in found, f"{fault.kind}: {found}"
    assert {s for _, s in found} == {fault.expect[1]}, f"{fault.kind} also blamed: {found}"


def test_every_nftables_kind_appears_in_the_matrix() -> None:
    assert {fault.kind for _, fault in NFT_CASES} >= {
        "cluster_ip_element_deleted", "nodeport_element_deleted", "reject_element_deleted",
        "local_drop_element_deleted", "local_nodeport_drop_element_deleted", "local_external_element_deleted",
        "local_nodeport_element_deleted", "firewall_element_deleted", "mark_for_masquerade_deleted",
        "masquerade_rule_deleted", "hook_chain_deleted", "endpoint_dnat_deleted"}


# nftables mode on IPv6: `table ip6 kube-proxy` ------------------------------------------------------------------
# The one IPv6 table (tests/fixtures/kube-proxy-ipv6/nftables-supplementary/, from knftables' tests) on an IPv6-only
# node: addresses `ip6`, endpoints `[ip]:port`, IPv6 forwarding; its own cluster state. Every kind the table has
# material for (it has no drops, rejects or firewall elements: ClusterIP, NodePort, endpoint DNAT, masquerade, a
# hook chain).
NFT6_FIXTURE = "knftables_TestFakeParseDump_IPv6_kube-proxy_example"
NFT6_TEXT = (SUP6 / f"{NFT6_FIXTURE}.nft").read_text()
NFT6_CASES = nft_faults(NFT6_TEXT, "ip6")


def ipv6_nftables_node(node: Node) -> None:
    node.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")  # (no dummy module here)
    for link in ("eth0", "eth1"):
        node.sh("ip", "link", "set", link, "up")
    node.sh("ip", "addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad")
    node.sysctl("net.ipv6.conf.all.forwarding", 1)
    node.nft_load(NFT6_TEXT)
    node.kube_proxy("--proxy-mode=nftables", "--hostname-override=test-node")
    node.kubelet("--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
                 config=DATA / "kubeadm" / "kubelet-config.yaml")
    node.kube_proxy_http("--mode", "nftables", "--version", "v1.33.1")


def check_nft6(node: Node) -> dict[str, Any]:
    _, doc = node.check("--cluster-state", str(SUP6 / f"{NFT6_FIXTURE}.cluster.json"), "--grace", "0")
    (src,) = [s for s in doc["sources"] if s["name"] == "nftables"]
    assert src["ok"] and not src.get("absent"), src
    return doc


def test_ipv6_nftables_table_on_an_ipv6_only_node_gives_no_finding(node: Node) -> None:
    ipv6_nftables_node(node)
    # IPv4 forwarding and route_localnet are off here: an IPv6-only node is not judged on them
    ipv4 = node.sh("cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/conf/all/route_localnet").stdout
    assert ipv4.split() == ["0", "0"]
    doc = check_nft6(node)
    assert problems(doc) == set()
    # no IPv4 table, sysctl or localhost NodePort asked for
    assert {f["id"] for f in doc["findings"]} == {"kube_proxy.mode", "kubelet.hairpin_mode"}
    # IPv6's own sysctl is
    node.sysctl("net.ipv6.conf.all.forwarding", 0)
    assert problems(check_nft6(node)) == {("node.ipv6_forwarding_disabled", "test-node")}


@pytest.mark.parametrize("fault", NFT6_CASES, ids=[str(f) for f in NFT6_CASES])
def test_ipv6_nftables_fault_gives_its_finding_for_its_service(node: Node, fault: NftFault) -> None:
    ipv6_nftables_node(node)
    apply_nft(node, fault, "ip6")
    doc = check_nft6(node)
    found = problems(doc)
    assert fault.expect in found, f"{fault.kind}: {found}"
    assert {s for _, s in found} == {fault.expect[1]}, f"{fault.kind} also blamed: {found}"
    for f in doc["findings"]:
        if f["id"].startswith("rules.") and f["evidence"].get("address", "").startswith("["):
            assert f["evidence"]["address"] == "[fd00:172:30::41]:80", f["evidence"]
        if f["id"] == "rules.endpoint_missing":  # kube-proxy's `dnat to [ip]:port`, read back as such
            assert f["evidence"]["endpoint"] == "[fd00:10:180::2:1]:80", f["evidence"]
        if f["severity"] != "info":
            assert f["evidence"]["family"] in (6, "ip6"), f["evidence"]


def test_every_ipv6_nftables_kind_appears() -> None:
    assert {f.kind for f in NFT6_CASES} == {"cluster_ip_element_deleted", "nodeport_element_deleted",
                                             "mark_for_masquerade_deleted", "masquerade_rule_deleted",
                                             "hook_chain_deleted", "endpoint_dnat_deleted"}


# without an API: what the rules alone show ------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "commands", "expect"), [
    ("service_chain_flushed", (("-t", "nat", "-F", "KUBE-SVC-XPGD46QRK7WJZT7O"),),
     ("iptables.service_without_endpoints_chain", "ns1/svc1:p80")),
    ("nodeports_jump_deleted", (("-t", "nat", "-D", "KUBE-SERVICES", "-m", "comment", "--comment",
                                 "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
                                 "-m", "addrtype", "--dst-type", "LOCAL", "-j", "KUBE-NODEPORTS"),),
     ("iptables.nodeports_jump_missing", "nat/KUBE-SERVICES")),
], ids=["service_chain_flushed", "nodeports_jump_deleted"])
def test_structure_fault_is_found_without_an_api(node: Node, kind: str, commands: tuple[tuple[str, ...], ...],
                                                  expect: tuple[str, str]) -> None:
    load(node, OVERALL, "nft")
    apply(node, "nft", commands)
    _, doc = node.check("--no-api")
    assert {p for p in problems(doc) if p[0].startswith("iptables.")} == {expect}, kind
    hit = next(f for f in doc["findings"] if (f["id"], f["service"] or f["subject"]) == expect)
    assert hit["severity"] == "critical"


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_port_changed_on_the_service_only_is_silent(node: Node, tmp_path: Path, backend: str) -> None:
    """A control: kube-proxy takes endpoint ports from the EndpointSlices, never the Service's targetPort, so a
    Service edited while its slices keep the old port changes nothing kube-proxy writes."""
    load(node, OVERALL, backend)
    items = items_of(OVERALL)
    for item in items:
        if item["kind"] == "Service":
            for port in item["spec"]["ports"]:
                port["targetPort"] = 8443
    assert problems(check_with(node, OVERALL, tmp_path, items, grace="0")) == set()
