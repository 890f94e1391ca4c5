"""iptables mode on real kernel state: kube-proxy's real rule sets restored into a node's netns on both
backends, checked by `svcdoctor check` inside it; faults made with iptables itself; the read leaves
every table as it was; and libiptc (python-iptables) agrees with the parser on every fixture."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.collect.iptables_parse import parse_text
from agent.model.iptables import jump_target
from tests.testbed import DATA, FIXTURES, PY, Node, by_id, problems, require

IPT = FIXTURES / "iptables"
NODE_BASE = (IPT / "node-base.rules").read_text()
FULL = sorted(p.name for p in IPT.glob("*.rules")
              if "-save" not in p.name and "partial" not in p.name and p.name != "node-base.rules")
PARTIAL_SEQUENCE = sorted(p.name for p in IPT.glob("v1.3x_TestSyncProxyRulesRepeated_0*.rules")
                          if "-save" not in p.name)
BACKENDS = ("legacy", "nft")
OTHER = {"legacy": "nft", "nft": "legacy"}


def load(node: Node, fixture: str, backend: str) -> None:
    """A node as kube-proxy and kubelet leave it: the fixture's restore input, then node-base.rules."""
    node.nfacct_for_kube_proxy()
    node.iptables_restore((IPT / fixture).read_text(), backend)
    node.iptables_restore(NODE_BASE, backend, noflush=True)


def iptables_problems(doc: dict[str, object]) -> set[tuple[str, str]]:
    return {p for p in problems(doc) if p[0].startswith("iptables.")}


def iptables_source(doc: dict[str, object]) -> dict[str, object]:
    (src,) = [s for s in doc["sources"] if s["name"] == "iptables"]  # type: ignore[attr-defined, index]
    return src  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fixture", FULL)
def test_full_sync_fixture_on_a_healthy_node_has_no_problems(node: Node, fixture: str, backend: str) -> None:
    load(node, fixture, backend)
    node.healthy_kube_proxy()
    rc, doc = node.check()
    assert problems(doc) == set()
    assert rc == 0
    assert iptables_source(doc)["ok"] is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_partial_sync_sequence_has_no_problems_after_each_step(node: Node, backend: str) -> None:
    node.nfacct_for_kube_proxy()
    node.healthy_kube_proxy()
    for step, fixture in enumerate(PARTIAL_SEQUENCE):
        node.iptables_restore((IPT / fixture).read_text(), backend, noflush=True)  # as kube-proxy applies it
        if step == 0:
            node.iptables_restore(NODE_BASE, backend, noflush=True)
        _, doc = node.check()
        assert (fixture, problems(doc)) == (fixture, set())


def _rule_spec(node: Node, backend: str, table: str, pattern: str) -> list[str]:
    """The argv of the one saved rule containing `pattern` (for `iptables -D`)."""
    lines = [line for line in node.sh(f"iptables-{backend}-save", "-t", table).stdout.splitlines()
             if line.startswith("-A ") and pattern in line]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])[1:]


def _delete(node: Node, backend: str, table: str, pattern: str) -> None:
    node.sh(f"iptables-{backend}", "-w", "60", "-t", table, "-D", *_rule_spec(node, backend, table, pattern))


def delete_dispatch(node: Node, backend: str) -> None:
    _delete(node, backend, "nat", '"ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC')


def delete_hook(node: Node, backend: str) -> None:
    _delete(node, backend, "nat", "-A PREROUTING")


def delete_dnat(node: Node, backend: str) -> None:
    _delete(node, backend, "nat", "-A KUBE-SEP-UKSFD7AGPMPPLUHC -p tcp")


def delete_endpoint_chain(node: Node, backend: str) -> None:
    _delete(node, backend, "nat", "-j KUBE-SEP-SXIVWICOYRO3J4NJ")  # the kernel refuses to drop a used chain
    node.sh(f"iptables-{backend}", "-w", "60", "-t", "nat", "-F", "KUBE-SEP-SXIVWICOYRO3J4NJ")
    node.sh(f"iptables-{backend}", "-w", "60", "-t", "nat", "-X", "KUBE-SEP-SXIVWICOYRO3J4NJ")


def chains_in_other_backend(node: Node, backend: str) -> None:
    node.iptables_restore("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\nCOMMIT\n", OTHER[backend])


def userspace_portals(node: Node, backend: str) -> None:
    node.iptables_restore((DATA / "iptables" / "userspace-portals.rules").read_text(), backend, noflush=True)


FAULTS: list[tuple[Callable[[Node, str], None], set[tuple[str, str]]]] = [
    (delete_dispatch, {("iptables.service_chain_unreferenced", "ns1/svc1:p80")}),
    (delete_hook, {("iptables.hook_missing", "nat/PREROUTING")}),
    (delete_dnat, {("iptables.endpoint_chain_broken", "ns4/svc4:p80")}),
    (delete_endpoint_chain, {("iptables.service_without_endpoints_chain", "ns1/svc1:p80")}),
    (chains_in_other_backend, {("iptables.backend_mismatch", "test-node")}),
    (userspace_portals, {("iptables.userspace_rules_present", "nat/KUBE-PORTALS-CONTAINER,KUBE-PORTALS-HOST")}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=[f.__name__ for f, _ in FAULTS])
def test_fault_gives_its_finding(node: Node, backend: str, fault: Callable[[Node, str], None],
                                 expected: set[tuple[str, str]]) -> None:
    load(node, "v1.3x_TestOverallIPTablesRules.rules", backend)
    node.healthy_kube_proxy()
    _, before = node.check()
    assert problems(before) == set()
    fault(node, backend)
    _, after = node.check()
    assert problems(after) == expected


def everything(node: Node) -> str:
    """All netfilter state of the netns as text, both iptables backends and nftables, plus which legacy
    tables exist (a read that created one would show here first). Packet counters are left out: the
    check's own HTTP requests to kube-proxy's stand-in pass through the hooks and count."""
    parts = [node.sh("cat", f"/proc/net/{n}").stdout for n in ("ip_tables_names", "ip6_tables_names")]
    for tool in ("iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save"):
        parts.append("\n".join(re.sub(r"\[\d+:\d+\]", "[-]", x) for x in node.sh(tool).stdout.splitlines()
                               if not x.startswith("#")))
    parts.append(node.sh("nft", "--stateless", "list", "ruleset").stdout)
    return "\n----\n".join(parts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_changes_nothing_in_any_backend(node: Node, backend: str) -> None:
    load(node, "v1.3x_TestOverallIPTablesRules.rules", backend)
    node.healthy_kube_proxy()
    before = everything(node)
    assert "KUBE-SERVICES" in before
    if backend == "nft":
        assert node.sh("cat", "/proc/net/ip_tables_names").stdout == ""  # no legacy table to start with
    _, doc = node.check()
    assert iptables_source(doc)["ok"] is True
    assert everything(node) == before


def test_check_on_an_empty_node_creates_no_table(node: Node) -> None:
    node.healthy_kube_proxy()
    before = everything(node)
    _, doc = node.check()
    assert everything(node) == before
    assert {f["subject"] for f in by_id(doc, "iptables.chain_missing")} >= {"nat/KUBE-SERVICES"}


# --- python-iptables as an independent oracle ----------------------------------------------------------

@pytest.mark.parametrize("fixture", FULL)
def test_parser_agrees_with_libiptc(node: Node, fixture: str, tmp_path: Path) -> None:
    require(importlib.util.find_spec("iptc") is not None, "needs python-iptables (the test extra)")
    load(node, fixture, "legacy")
    rs = parse_text(node.iptables_save("legacy"))
    tables = node.sh("cat", "/proc/net/ip_tables_names").stdout.split()  # only existing ones: no side effect
    out = tmp_path / "iptc.json"
    node.sh(PY, str(DATA / "iptables" / "iptc_dump.py"), str(out), *tables)
    dump = json.loads(out.read_text())
    assert set(dump) == set(rs.tables)
    for name, chains in dump.items():
        table = rs.tables[name]
        assert sorted(chains) == sorted(table.chains), name
        assert sum(len(rules) for rules in chains.values()) == table.rule_count, name
        for chain, rules in chains.items():
            if chain.startswith("KUBE-SEP-"):
                assert ",".join(r["dnat"] for r in rules if r["target"] == "DNAT") == table.endpoint_dnat[chain]
            elif chain in table.ladders:
                ladder = table.ladders[chain]  # kube-proxy writes the affinity jumps before the balancing ones
                assert [r["target"] for r in rules if str(r["target"]).startswith("KUBE-SEP-")] == \
                    [*ladder.affinity_endpoints, *ladder.endpoints], chain
            elif chain in table.dispatch:
                assert [(r["target"] or "", r["comment"]) for r in rules] == \
                    [(x.target, x.comment) for x in table.dispatch[chain]], chain
                assert [r["dst"] for r in rules] == [_mask(x.destination) for x in table.dispatch[chain]], chain
            else:
                assert [r["target"] or "" for r in rules] == [jump_target(t) for t in table.plain.get(chain, [])], chain


def _mask(addr: str | None) -> str | None:
    """The parser's "1.2.3.4" / "!10.0.0.0/8" in libiptc's "1.2.3.4/255.255.255.255" form."""
    if addr is None:
        return None
    neg, addr = ("!", addr[1:]) if addr.startswith("!") else ("", addr)
    ip, _, bits = addr.partition("/")
    n = int(bits or 32)
    mask = ".".join(str((0xFFFFFFFF << (32 - n) >> (24 - 8 * i)) & 0xFF) for i in range(4))
    return f"{neg}{ip}/{mask}"



def test_crashing_save_is_source_failed_and_serve_goes_on(node: Node, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """iptables-nft-save crashing (as it does at 30k Services) is one agent.source_failed with the
    reason; the other checks and the metrics still come, and serve stays healthy."""
    load(node, "v1.3x_TestOverallIPTablesRules.rules", "nft")
    node.healthy_kube_proxy()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "iptables-nft-save").write_text("#!/bin/sh\n/usr/sbin/iptables-nft-save | /usr/bin/head -c 2000\n"
                                            "echo 'Segmentation fault' >&2; exit 139\n")
    (fake / "iptables-nft-save").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    node.serve("--interval", "60s")
    (findings, metrics, health) = node.http("http://127.0.0.1:9100/findings", "http://127.0.0.1:9100/metrics",
                                            "http://127.0.0.1:9100/healthz")
    doc = json.loads(findings["body"])
    (failed,) = by_id(doc, "agent.source_failed")
    assert failed["subject"] == "iptables"
    assert "exited 139: Segmentation fault" in failed["evidence"]["error"]
    assert not [f for f in doc["findings"] if f["id"].startswith("iptables.")]  # a failed read is no fault
    assert "kube_proxy.mode" in {f["id"] for f in doc["findings"]}
    fams = {f.name: f for f in text_string_to_metric_families(metrics["body"])}
    success = {s.labels["source"]: s.value for s in fams["svcdoctor_source_success"].samples}
    assert success["iptables"] == 0 and success["sysctl"] == 1
    assert health["status"] == 200
