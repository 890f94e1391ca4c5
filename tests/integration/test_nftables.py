"""nftables mode on real kernel state: kube-proxy's own tables (`tests/fixtures/kube-proxy/nftables/`)
loaded with `nft -f` into a fresh netns, a stand-in kube-proxy started with `--proxy-mode=nftables`
(and its /proxyMode answering "nftables"), and `svcdoctor check` run inside. Faults are made with
`nft` commands on the loaded table, the way a person or a buggy tool would.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.checks import CHECKS, rules
from agent.model import Snapshot
from agent.model.nftables import Chain, ChainDetails
from tests.checks.test_nftables import items as offline_items
from tests.checks.test_nftables import state as offline_state
from tests.testbed import DATA, FIXTURES, Node, by_id, problems

NFT = FIXTURES / "nftables"
FIXTURE_NAMES = sorted(p.name.removesuffix(".nft") for p in NFT.glob("*.nft"))
OVERALL = "v1.3x_TestOverallNFTablesRules"
CLUSTER_IP_ONLY = "v1.3x_TestSyncProxyRulesRepeated_07_endpoint_change_stale_endpoint_chain"

pytestmark = pytest.mark.netns

# The expected-vs-actual comparison (rules.*, issue 4) consumes programmed_nftables; its findings are
# expected here once agent/checks/rules.py is listed in CHECKS. The nftables.* findings always are.
RULES_ACTIVE = rules.check in CHECKS


def want(structure: set[tuple[str, str]], comparison: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return structure | (comparison if RULES_ACTIVE else set())


def nftables_node(node: Node, fixture: str) -> None:
    node.healthy_basics()
    node.nft_load((NFT / f"{fixture}.nft").read_text())
    node.kube_proxy("--proxy-mode=nftables", "--hostname-override=test-node")
    node.kubelet("--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
                 config=DATA / "kubeadm" / "kubelet-config.yaml")
    node.kube_proxy_http("--mode", "nftables", "--version", "v1.33.1")


def check(node: Node, fixture: str | None = None) -> dict[str, Any]:
    args = ["--cluster-state", str(NFT / f"{fixture}.cluster.json"), "--grace", "0"] if fixture else ["--no-api"]
    _, doc = node.check(*args)
    (src,) = [s for s in doc["sources"] if s["name"] == "nftables"]
    assert src["ok"] and not src.get("absent"), src
    return doc


def comparable(chain: Chain) -> Chain:
    """A chain with its vmap as the set of endpoint chains it holds: the live read infers a vmap's
    members from the kernel's reference counts (not its numgen indexes, see nftables_netlink.py)."""
    vmap = {str(i): e for i, e in enumerate(sorted((chain.vmap or {}).values()))} if chain.vmap else chain.vmap
    details = dataclasses.replace(chain.details, vmap_by_reference=False) if chain.details else None
    return dataclasses.replace(chain, vmap=vmap, details=None if details == ChainDetails() else details)


def handle_of(node: Node, chain: str, pattern: str, family: str = "ip") -> str:
    listing = node.sh("nft", "-a", "list", "chain", family, "kube-proxy", chain).stdout
    (line,) = [ln for ln in listing.splitlines() if pattern in ln]
    m = re.search(r"# handle (\d+)", line)
    assert m, line
    return m.group(1)


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_kube_proxy_table_gives_no_warning_or_critical_and_is_left_unchanged(node: Node, fixture: str,
                                                                             tmp_path: Path) -> None:
    nftables_node(node, fixture)
    before = node.full_ruleset()
    _, doc = node.check("--no-api", "--snapshot-out", str(tmp_path / "snap.json"))
    assert problems(doc) == set()
    (mode,) = by_id(doc, "kube_proxy.mode")
    assert mode["evidence"]["mode"] == "nftables"
    assert node.full_ruleset() == before
    # What the live read (nft -j for the maps and sets, netlink dumps for the chains) saw is what the
    # fixture's `nft -j` / `nft list` listings say, for every chain it read; it reads the chains traffic
    # can reach (every chain a map dispatches to among them) and only lists the others.
    live = Snapshot.from_json((tmp_path / "snap.json").read_text()).nftables.data
    assert live is not None
    (got,), (want,) = live.tables, offline_state(offline_items(fixture)).tables
    assert (got.maps, got.sets, got.affinity_timeouts) == (want.maps, want.sets, want.affinity_timeouts)
    assert sorted(got.chains) == sorted(want.chains)
    read = {n for n, c in got.chains.items() if c.rules_read}
    assert [comparable(got.chains[n]) for n in sorted(read)] == [comparable(want.chains[n]) for n in sorted(read)]
    assert all(c.vmap_by_reference for c in got.chains.values() if c.numgen_mod is not None)
    assert {e.target for m in got.maps.values() for e in m if e.target} <= read
    unread = set(got.chains) - read
    assert all(want.chains[n].rule_count == 0 or n in ("reject-chain",) or n.startswith("firewall-")
               for n in unread), unread


@pytest.mark.parametrize("fixture", [n for n in FIXTURE_NAMES if "Repeated" in n])
def test_with_its_cluster_state_the_comparison_agrees(node: Node, fixture: str) -> None:
    nftables_node(node, fixture)
    assert problems(check(node, fixture)) == set()


def test_removed_service_ips_element_is_service_missing(node: Node) -> None:
    nftables_node(node, CLUSTER_IP_ONLY)
    node.sh("nft", "delete", "element", "ip", "kube-proxy", "service-ips", "{ 172.30.0.41 . tcp . 80 }")
    assert problems(check(node, CLUSTER_IP_ONLY)) == want(set(), {("rules.service_missing", "ns1/svc1:p80")})


def test_endpoint_chain_dnat_removed(node: Node) -> None:
    nftables_node(node, CLUSTER_IP_ONLY)
    chain = "endpoint-WAHRBT2B-ns4/svc4/tcp/p80__10.0.4.1/80"
    node.sh("nft", "delete", "rule", "ip", "kube-proxy", chain, "handle", handle_of(node, chain, "dnat"))
    assert problems(check(node, CLUSTER_IP_ONLY)) == want(
        {("nftables.endpoint_chain_broken", "ns4/svc4:p80")}, {("rules.endpoint_missing", "ns4/svc4:p80")})


def test_vmap_entry_removed_is_a_numgen_gap(node: Node) -> None:
    nftables_node(node, OVERALL)
    chain = "service-LAUZTJTB-ns4/svc4/tcp/p80"
    node.sh("nft", "delete", "rule", "ip", "kube-proxy", chain, "handle", handle_of(node, chain, "numgen"))
    node.sh("nft", "add", "rule", "ip", "kube-proxy", chain, "numgen", "random", "mod", "2", "vmap",
            "{ 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }")
    doc = check(node)
    assert problems(doc) == {("nftables.numgen_gap", "ns4/svc4:p80")}
    (f,) = by_id(doc, "nftables.numgen_gap")
    assert f["evidence"]["missing_indexes"] == "1 of 2"  # the live read counts a vmap's members


def test_reject_left_while_endpoints_exist(node: Node) -> None:
    nftables_node(node, CLUSTER_IP_ONLY)
    node.sh("nft", "add", "element", "ip", "kube-proxy", "no-endpoint-services",
            '{ 172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain }')
    assert problems(check(node, CLUSTER_IP_ONLY)) == want(
        {("nftables.reject_shadows_service", "ns1/svc1:p80")}, {("rules.reject_stale", "ns1/svc1:p80")})


def test_no_table_in_nftables_mode_is_table_missing(node: Node) -> None:
    node.healthy_basics()
    node.nft_load("table inet filter {\n chain input { type filter hook input priority 0; }\n}\n")
    node.kube_proxy("--proxy-mode=nftables", "--hostname-override=test-node")
    node.kubelet(config=DATA / "kubeadm" / "kubelet-config.yaml")
    node.kube_proxy_http("--mode", "nftables")
    _, doc = node.check("--no-api")
    assert problems(doc) == {("nftables.table_missing", "test-node")}
    (f,) = by_id(doc, "nftables.table_missing")
    assert f["evidence"]["other_tables"] == "inet filter"


def test_table_left_behind_in_iptables_mode_is_stale_mode_rules(node: Node) -> None:
    node.healthy_basics()
    node.nft_load((NFT / f"{OVERALL}.nft").read_text())
    node.kube_proxy("--proxy-mode=iptables", "--hostname-override=test-node")
    node.kubelet(config=DATA / "kubeadm" / "kubelet-config.yaml")
    node.kube_proxy_http("--mode", "iptables")
    _, doc = node.check("--no-api")
    (f,) = by_id(doc, "kube_proxy.stale_mode_rules")
    assert (f["evidence"]["mode"], f["evidence"]["mode_left"]) == ("iptables", "nftables")
    assert f["evidence"]["evidence_left"] == "table ip kube-proxy"
    assert not by_id(doc, "kube_proxy.mode_mismatch")


FALLBACK = """
import json
from unittest import mock
import agent.collect.nftables as nft
from agent.collect.base import CollectContext
from agent.config import Config
ctx = CollectContext(cfg=Config(), deadline_s=30)
netlink = nft.collect(ctx)
refused = PermissionError(1, "Operation not permitted")
with mock.patch.object(nft, "read_chains", side_effect=refused), \
        mock.patch.object(nft, "list_tables", side_effect=refused):
    text = nft.collect(ctx)
def members(state):
    return {n: (sorted((c.vmap or {}).values()), c.dnat, c.targets, c.rule_count, c.hook, c.priority)
            for t in state.tables for n, c in t.chains.items() if c.rules_read}
got, want = members(netlink), members(text)
same = all(got[n] == want[n] for n in got) and netlink.tables[0].maps == text.tables[0].maps
print(json.dumps({"same": same, "modes": [netlink.read_mode, text.read_mode]}))
"""


def test_netlink_refused_falls_back_to_nft_text_with_the_same_result(node: Node) -> None:
    """Stands in for a kernel or seccomp profile that refuses the netlink dumps: the collector reads
    `nft -t -y list table` instead, and sees the same chains."""
    node.nft_load((NFT / f"{OVERALL}.nft").read_text())
    out = json.loads(node.sh(sys.executable, "-c", FALLBACK).stdout)
    assert out["same"] is True
    assert out["modes"][0].endswith("nf_tables netlink dumps")
    assert "nft -t -y list table (netlink read failed: [Errno 1] Operation not permitted)" in out["modes"][1]


SHARED = """
import json
import agent.collect.nftables as nft
from agent.collect.base import CollectContext
from agent.config import Config
(table,) = nft.collect(CollectContext(cfg=Config(), deadline_s=30)).tables
chains = table.chains
targets = [t for c in chains.values() for t in c.targets if t in chains]
elements = [e for m in table.maps.values() for e in m if e.target in chains]
alone = [c.targets for c in chains.values() if len(c.targets) == 1]
parts = [[p for e in m for p in e.key if len(p) <= 5] for m in table.maps.values()]  # shared within a map
print(json.dumps({
    "targets": len(targets), "elements": len(elements), "alone": len(alone), "parts": sum(map(len, parts)),
    "targets_shared": all(t is chains[t].name for t in targets),
    "elements_shared": all(e.target is chains[e.target].name for e in elements),
    "alone_tuples": len({id(t) for t in alone}), "alone_distinct": len(set(alone)),
    "parts_objects": sum(len({id(p) for p in m}) for m in parts), "parts_distinct": sum(len(set(m)) for m in parts),
}))
"""


def test_a_read_holds_one_object_per_chain_name_target_tuple_and_short_key_part(node: Node) -> None:
    """At 10k Services a read's memory is mostly names: jump targets and map elements use their chain's own name
    object, chains that jump to one chain share that one-target tuple, and a map shares its "tcp" and "80"
    (bench/bench_iptables.py's nftables-mode peak RSS depends on it)."""
    node.nft_load((NFT / f"{OVERALL}.nft").read_text())
    out = json.loads(node.sh(sys.executable, "-c", SHARED).stdout)
    assert min(out["targets"], out["elements"], out["alone"], out["parts"]) > 0, out
    assert out["targets_shared"] is True and out["elements_shared"] is True
    assert out["alone_tuples"] == out["alone_distinct"]
    assert out["parts_objects"] == out["parts_distinct"]
