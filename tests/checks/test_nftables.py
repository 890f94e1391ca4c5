"""nftables mode from kube-proxy's own tables: the structure checks, and the per-Service view
(programmed_ports) the expected-vs-actual comparison consumes.

Snapshots are built offline from `tests/fixtures/kube-proxy/nftables/NAME.nft-list.{json,txt}`
(`nft -j list table` / `nft list table ip kube-proxy` after loading the fixture) through the
collector's own parsers: the maps and sets from the JSON, the chains from the text, as the collector
reads them live; the same fixtures loaded into a netns are in tests/integration/test_nftables.py.
Faults edit the listing the way the corresponding `nft` command edits the table.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.checks.expected import expected_ports
from agent.checks.programmed_nftables import programmed_ports
from agent.checks.rules import compare
from agent.collect.nftables import table_from_items
from agent.collect.nftables_text import add_text
from agent.kubeobjects import state_from_items
from agent.model import KubeProxyHTTP, Snapshot, Source
from agent.model.cluster import ClusterState
from agent.model.links import Links
from agent.model.nftables import NftablesState, name_hash, parse_chain_name
from agent.model.programmed import ProgrammedServices
from tests.checks.helpers import found, run_checks
from tests.snapshots import healthy, kube_proxy_process
from tests.testbed import DATA, FIXTURES

NFT = FIXTURES / "nftables"
FIXTURE_NAMES = sorted(p.name.removesuffix(".nft") for p in NFT.glob("*.nft"))
OVERALL = "v1.3x_TestOverallNFTablesRules"
NODE = "test-node"


# helpers (also used by tests/integration/test_nftables.py) --------------------------------------------

@dataclass
class Listing:
    """One fixture's listing: JSON items (maps and sets are taken from them) and the text (chains)."""

    items: list[dict[str, Any]]
    text: str

    def drop_line(self, needle: str) -> None:
        lines = self.text.splitlines()
        (hit,) = [i for i, ln in enumerate(lines) if needle in ln]
        del lines[hit]
        self.text = "\n".join(lines) + "\n"

    def replace(self, old: str, new: str) -> None:
        assert old in self.text, old
        self.text = self.text.replace(old, new)

    def drop_chain(self, name: str, *, keep_header: bool = False) -> None:
        lines = self.text.splitlines()
        start = lines.index(f"\tchain {name} {{")
        end = lines.index("\t}", start)
        lines[start:end + 1] = [f"\tchain {name} {{", "\t}"] if keep_header else []
        self.text = "\n".join(lines) + "\n"


def items(name: str) -> Listing:
    return Listing(list(json.loads((NFT / f"{name}.nft-list.json").read_text())["nftables"]),
                   (NFT / f"{name}.nft-list.txt").read_text())


def state(listing: Listing) -> NftablesState:
    table = table_from_items("ip", listing.items)
    add_text(table, listing.text.splitlines())
    return NftablesState(nft_version="1.0.6", tables=[table])


def cluster(name: str) -> ClusterState:
    objs = json.loads((NFT / f"{name}.cluster.json").read_text())["items"]
    return state_from_items(objs, NODE, f"file {name}.cluster.json", 0)


def nft_snapshot(nft: NftablesState | Source[NftablesState], *, with_cluster: str | None = None,
                 mode: str = "nftables") -> Snapshot:
    """A healthy node whose kube-proxy runs in `mode` and whose nftables source saw `nft`."""
    http = KubeProxyHTTP(healthz_url="http://127.0.0.1:10256/healthz", healthz_status=200, proxy_mode=mode,
                         version="v1.33.1")
    extra: dict[str, Any] = {}
    if with_cluster is not None:
        extra["cluster"] = cluster(with_cluster)
    return healthy(kube_proxy=kube_proxy_process(f"--proxy-mode={mode}", "--hostname-override=test-node"),
                   kube_proxy_http=http, nftables=nft, **extra)


def with_comparison(snap: Snapshot) -> set[tuple[str, str]]:
    """found(), plus the expected-vs-actual comparison over programmed_ports (given the cluster state,
    which names the kind of external addresses) run explicitly, whether or not CHECKS lists it."""
    assert snap.cluster.data is not None and snap.nftables.data is not None
    view = ProgrammedServices("nftables", programmed_ports(snap.nftables.data, snap.cluster.data))
    extra = {(f.id, f.service or f.subject) for f in compare(expected_ports(snap.cluster.data, NODE), view)
             if f.severity != "info"}
    return {x for x in found(snap) if not x[0].startswith("rules.")} | extra


def map_of(listing: Listing, name: str) -> dict[str, Any]:
    m: dict[str, Any] = next(o["map"] for o in listing.items if "map" in o and o["map"]["name"] == name)
    return m


# chain names ---------------------------------------------------------------------------------------

def test_chain_name_ties_a_chain_to_its_service_port_by_hash() -> None:
    name = parse_chain_name("endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80")
    assert name is not None
    assert (name.prefix, name.service_port, name.protocol, name.endpoint, name.hash_ok) == (
        "endpoint", "ns1/svc1:p80", "tcp", "10.180.0.1:80", True)
    edited = parse_chain_name("service-5OJB2KTY-ns1/svc1/tcp/p80")
    assert edited is not None and not edited.hash_ok


def test_chain_name_of_unnamed_port_and_ipv6_endpoint() -> None:
    body = "ns/svc/udp/__fd00.1..5/53"
    name = parse_chain_name(f"endpoint-{name_hash(body)}-{body}")
    assert name is not None
    assert (name.service_port, name.endpoint, name.hash_ok) == ("ns/svc", "[fd00:1::5]:53", True)


@pytest.mark.parametrize("chain", ["services", "nat-prerouting", "reject-chain", "KUBE-SVC-ABC", "service-x"])
def test_non_service_chains_are_not_parsed(chain: str) -> None:
    assert parse_chain_name(chain) is None


# every fixture is healthy ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_gives_no_warning_or_critical(name: str) -> None:
    assert found(nft_snapshot(state(items(name)))) == set()


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_with_its_cluster_state_gives_no_warning_or_critical(name: str) -> None:
    """The whole chain: structure checks, and the lead's comparison fed by programmed_ports."""
    assert with_comparison(nft_snapshot(state(items(name)), with_cluster=name)) == set()


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_programmed_ports_match_what_the_api_expects(name: str) -> None:
    want = expected_ports(cluster(name), NODE)
    view = ProgrammedServices("nftables", programmed_ports(state(items(name)), cluster(name)))
    assert [(f.id, f.service) for f in compare(want, view)] == []


# programmed_ports against independent statements of the fixtures ---------------------------------------

def view_of(nft: NftablesState, cl: ClusterState | None = None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in programmed_ports(nft, cl):
        assert (p.protocol, p.family) == ("tcp", 4)
        out[p.service] = {"dispatch": sorted([d.kind, d.address, d.action] for d in p.dispatch),
                          "endpoints": p.endpoints, "affinity_seconds": p.affinity_seconds}
    return out


def test_overall_fixture_every_service_port_dispatch_and_endpoints() -> None:
    want = json.loads((DATA / "nftables" / "overall_programmed.json").read_text())
    want.pop("_comment")
    got = view_of(state(items(OVERALL)), cluster(OVERALL))
    assert sorted(got) == sorted(want)
    for svc, w in want.items():
        assert got[svc]["dispatch"] == sorted(w["dispatch"]), svc
        assert got[svc]["endpoints"] == w["endpoints"], svc
        assert got[svc]["affinity_seconds"] == w.get("affinity_seconds"), svc


def test_without_cluster_state_a_firewalled_lb_ip_is_still_known_as_lb() -> None:
    got = view_of(state(items(OVERALL)))
    assert ["load_balancer_ip", "5.6.7.8:80", "service"] in got["ns5/svc5:p80"]["dispatch"]
    # svc2's LB IP has no firewall entry: from the node alone it is an external address
    assert ["external_ip", "1.2.3.4:80", "service"] in got["ns2/svc2:p80"]["dispatch"]


@pytest.mark.parametrize("name", [n for n in FIXTURE_NAMES if "Repeated" in n])
def test_repeated_fixture_ports_follow_their_services_and_endpoints(name: str) -> None:
    """The TestSyncProxyRulesRepeated steps are ClusterIP-only: each port is dispatched to its
    endpoints, or rejected when it has none; flushed leftover chains are not Service ports."""
    spec = json.loads((NFT / f"{name}.json").read_text())
    want: dict[str, dict[str, Any]] = {}
    for svc in spec["services"]:
        for p in svc["ports"]:
            key = f"{svc['namespace']}/{svc['name']}:{p['name']}"
            eps = sorted(f"{e['ip']}:{e['port']}" for e in spec["endpoints"]
                         if e["service"] == f"{svc['namespace']}/{svc['name']}" and e["portName"] == p["name"])
            action = "service" if eps else "reject"
            want[key] = {"dispatch": [["cluster_ip", f"{svc['clusterIP']}:{p['port']}", action]],
                         "endpoints": eps, "affinity_seconds": None}
    assert view_of(state(items(name))) == want


# faults: each gives its finding for the right ns/svc:port -------------------------------------------

def test_endpoint_chain_without_dnat_is_broken_and_its_endpoint_not_programmed() -> None:
    listing = items(OVERALL)
    listing.drop_line("dnat to 10.180.0.4:80")  # nft delete rule ... endpoint-UNZV3OEC-... handle N
    nft = state(listing)
    assert found(nft_snapshot(nft)) == {("nftables.endpoint_chain_broken", "ns4/svc4:p80")}
    assert view_of(nft)["ns4/svc4:p80"]["endpoints"] == ["10.180.0.5:80"]
    assert with_comparison(nft_snapshot(nft, with_cluster=OVERALL)) == {
        ("nftables.endpoint_chain_broken", "ns4/svc4:p80"), ("rules.endpoint_missing", "ns4/svc4:p80")}


def test_missing_vmap_entry_is_a_numgen_gap() -> None:
    listing = items(OVERALL)
    listing.replace("0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80, ", "")
    nft = state(listing)
    (f,) = [f for f in nft_snapshot_findings(nft) if f.id == "nftables.numgen_gap"]
    assert (f.service, f.evidence["missing_indexes"]) == ("ns4/svc4:p80", "0")
    assert found(nft_snapshot(nft)) == {("nftables.numgen_gap", "ns4/svc4:p80")}
    assert view_of(nft)["ns4/svc4:p80"]["endpoints"] == ["10.180.0.5:80"]
    assert with_comparison(nft_snapshot(nft, with_cluster=OVERALL)) == {
        ("nftables.numgen_gap", "ns4/svc4:p80"), ("rules.endpoint_missing", "ns4/svc4:p80")}


def test_reject_left_while_service_is_dispatched_shadows_it() -> None:
    listing = items(OVERALL)
    map_of(listing, "no-endpoint-services")["elem"].append(
        [{"elem": {"val": {"concat": ["172.30.0.41", "tcp", 80]}, "comment": "ns1/svc1:p80"}},
         {"goto": {"target": "reject-chain"}}])
    nft = state(listing)
    assert found(nft_snapshot(nft)) == {("nftables.reject_shadows_service", "ns1/svc1:p80")}
    assert ["cluster_ip", "172.30.0.41:80", "reject"] in view_of(nft)["ns1/svc1:p80"]["dispatch"]
    assert with_comparison(nft_snapshot(nft, with_cluster=OVERALL)) == {
        ("nftables.reject_shadows_service", "ns1/svc1:p80"), ("rules.reject_stale", "ns1/svc1:p80")}


def test_removed_service_ips_element_leaves_the_port_unprogrammed_not_broken() -> None:
    listing = items(OVERALL)
    m = map_of(listing, "service-ips")
    m["elem"] = [e for e in m["elem"] if e[0]["concat"][0] != "172.30.0.41"]
    nft = state(listing)
    assert found(nft_snapshot(nft)) == set()  # structure is fine: the chain is just not reached
    assert "ns1/svc1:p80" not in view_of(nft)
    assert with_comparison(nft_snapshot(nft, with_cluster=OVERALL)) == {("rules.service_missing", "ns1/svc1:p80")}


def test_map_element_to_a_missing_chain_is_dangling() -> None:
    listing = items(OVERALL)
    listing.drop_chain("service-ULMVA6XW-ns1/svc1/tcp/p80")
    assert found(nft_snapshot(state(listing))) == {("nftables.dangling_goto", "ns1/svc1:p80")}


def test_dispatched_service_chain_with_no_endpoints() -> None:
    listing = items(OVERALL)
    listing.drop_chain("service-4AT6LBPK-ns3/svc3/tcp/p80", keep_header=True)  # nft flush chain ...
    assert found(nft_snapshot(state(listing))) == {("nftables.service_without_endpoints", "ns3/svc3:p80")}


def test_base_chain_deleted_or_at_the_wrong_priority_is_hook_missing() -> None:
    listing = items(OVERALL)
    listing.drop_chain("nat-prerouting")
    assert found(nft_snapshot(state(listing))) == {("nftables.hook_missing", "table ip kube-proxy: nat prerouting")}
    listing = items(OVERALL)
    listing.replace("type nat hook output priority -100;", "type nat hook output priority 100;")
    assert found(nft_snapshot(state(listing))) == {("nftables.hook_missing", "table ip kube-proxy: nat output")}


def test_v1_29_base_chain_layout_is_accepted() -> None:
    """v1.29-1.30: filter-{prerouting,input,forward,output} at dstnat-10 and one endpoints-check chain."""
    listing = items(OVERALL)
    listing.drop_chain("filter-output-pre-dnat")
    for hook in ("forward", "input", "output"):
        listing.replace(f"type filter hook {hook} priority filter;", f"type filter hook {hook} priority dstnat - 10;")
    listing.replace("chain filter-prerouting-pre-dnat {", "chain filter-prerouting {")
    listing.replace("jump service-endpoints-check", "jump endpoints-check")
    listing.replace("jump nodeport-endpoints-check", "jump endpoints-check")
    listing.replace("chain filter-output {\n\t\ttype filter hook output priority dstnat - 10; policy accept;\n",
                    "chain filter-output {\n\t\ttype filter hook output priority dstnat - 10; policy accept;\n"
                    "\t\tct state new jump firewall-check\n")
    listing.replace("chain service-endpoints-check {", "chain endpoints-check {")
    assert found(nft_snapshot(state(listing))) == set()


def test_missing_dispatch_map() -> None:
    listing = items(OVERALL)
    listing.items = [o for o in listing.items if not ("map" in o and o["map"]["name"] == "service-nodeports")]
    # the rule dispatching through it stays (nft itself would refuse that; a partial listing would not)
    assert ("nftables.map_missing", "table ip kube-proxy: service-nodeports") in found(nft_snapshot(state(listing)))


def test_text_and_json_listings_agree_on_every_chain() -> None:
    """The chains as the text parser reads them carry the same jumps, vmaps and DNATs as the JSON."""
    for name in FIXTURE_NAMES:
        listing = items(name)
        chains = state(listing).tables[0].chains
        for o in listing.items:
            if "rule" in o:
                exprs = json.dumps(o["rule"]["expr"])
                chain = chains[o["rule"]["chain"]]
                if '"dnat"' in exprs:
                    addr = o["rule"]["expr"][-1]["dnat"]
                    assert f"{addr['addr']}:{addr['port']}" in chain.dnat, (name, chain.name)
                if '"numgen"' in exprs:
                    entries = o["rule"]["expr"][0]["vmap"]["data"]["set"]
                    assert chain.vmap == {str(i): v["goto"]["target"] for i, v in entries}, (name, chain.name)
            if "chain" in o:
                c = o["chain"]
                assert (chains[c["name"]].hook, chains[c["name"]].priority) == (c.get("hook"), c.get("prio"))


def test_table_missing_only_in_nftables_mode() -> None:
    empty = NftablesState(nft_version="1.0.6", other_tables=["ip filter"])
    assert found(nft_snapshot(empty)) == {("nftables.table_missing", "test-node")}
    assert "nftables.table_missing" not in {i for i, _ in found(nft_snapshot(empty, mode="iptables"))}
    absent: Source[NftablesState] = Source("nftables", ok=True, absent=True, note="nf_tables is not loaded")
    assert found(nft_snapshot(absent)) == {("nftables.table_missing", "test-node")}


def test_failed_read_is_not_a_missing_table() -> None:
    failed: Source[NftablesState] = Source("nftables", ok=False, error="nft -j list tables exited 1: boom")
    assert found(nft_snapshot(failed)) == {("agent.source_failed", "nftables")}


def test_snapshot_round_trips_through_json() -> None:
    snap = nft_snapshot(state(items(OVERALL)))
    again = Snapshot.from_json(snap.to_json())
    assert again.nftables.data == snap.nftables.data
    assert again.nftables.data is not None and snap.nftables.data is not None
    assert view_of(again.nftables.data) == view_of(copy.deepcopy(snap.nftables.data))


def nft_snapshot_findings(nft: NftablesState) -> list[Any]:
    from tests.checks.helpers import run_checks

    return run_checks(nft_snapshot(nft))


def test_fixture_files_exist() -> None:
    assert OVERALL in FIXTURE_NAMES and len(FIXTURE_NAMES) >= 6, FIXTURE_NAMES
    assert all(Path(NFT / f"{n}.cluster.json").exists() for n in FIXTURE_NAMES)


def test_metrics_count_chains_ports_and_endpoints_per_family() -> None:
    from agent.checks.derive import derive
    from agent.report.metrics_nftables import families
    from agent.runner import Report

    snap = nft_snapshot(state(items(OVERALL)))
    report = Report(snapshot=snap, findings=(), proxy_mode="nftables", generated_at=0.0, views=derive(snap))
    got = {(m.name, s.labels["family"]): s.value for m in families(report) for s in m.samples}
    assert got == {("svcdoctor_nftables_chains", "ip"): 32, ("svcdoctor_nftables_service_ports", "ip"): 6,
                   ("svcdoctor_nftables_endpoints", "ip"): 6}


def test_vmap_members_from_use_counts_split_cluster_and_local_chains() -> None:
    """The live reader infers vmap members from the kernel's chain use counts (rules + references):
    with both a service- and a local- chain, a local endpoint is referenced by both vmaps."""
    from collections import Counter

    from agent.collect.nftables_netlink import _vmaps_by_reference
    from agent.model.nftables import Chain

    body = "ns/svc/tcp/p80"
    svc, loc = Chain(name=f"service-{name_hash(body)}-{body}"), Chain(name=f"local-{name_hash(body)}-{body}")
    eps = [f"endpoint-X{i}-{body}__10.0.0.{i}/80" for i in (1, 2, 3)]
    chains = {e: Chain(name=e, rules_read=True, rule_count=0 if e == eps[2] else 2) for e in eps}
    # ep1 local (in both vmaps and an affinity goto), ep2 remote (cluster vmap), ep3 flushed leftover
    use = {eps[0]: 2 + 2 + 1, eps[1]: 2 + 1, eps[2]: 0}
    _vmaps_by_reference([svc, loc], {body: eps}, use, Counter({eps[0]: 1}), chains)
    assert sorted((svc.vmap or {}).values()) == [eps[0], eps[1]]
    assert sorted((loc.vmap or {}).values()) == [eps[0]]
    assert svc.vmap_by_reference and loc.vmap_by_reference


# IP families: a table per family the node serves, and only those judged ----------------------------------------
def _on_node(nft: NftablesState, *addresses: str) -> Snapshot:
    snap = nft_snapshot(nft)
    return dataclasses.replace(snap, links=Source("links", ok=True, data=Links(addresses=list(addresses))))


def test_a_dual_stack_node_without_its_ip6_table_is_table_missing_for_ipv6() -> None:
    only_ip = state(items(OVERALL))
    assert found(_on_node(only_ip, "192.168.0.2")) == set()
    snap = _on_node(only_ip, "192.168.0.2", "2001:db8::1")
    assert found(snap) == {("nftables.table_missing", "test-node")}
    (f,) = [f for f in run_checks(snap) if f.id == "nftables.table_missing"]
    assert f.evidence["family"] == "ip6" and "IPv6 address" in f.evidence["why"]


def test_a_table_of_a_family_the_node_does_not_serve_is_not_judged() -> None:
    listing = items(OVERALL)
    listing.drop_chain("nat-prerouting")  # broken: no DNAT for arriving traffic
    broken = state(listing)
    assert found(_on_node(broken, "192.168.0.2")) == {("nftables.hook_missing", "table ip kube-proxy: nat prerouting")}
    # the same `table ip kube-proxy` on an IPv6-only node: kube-proxy runs no IPv4 proxier there, writes no ip table,
    # and the one there is not judged; the ip6 table it does write is missing
    assert found(_on_node(broken, "2001:db8::1")) == {("nftables.table_missing", "test-node")}
