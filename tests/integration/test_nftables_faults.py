"""nftables mode when `nft` itself misbehaves, on real kernel state: kube-proxy's table loaded with the
real `nft` into a netns, and `svcdoctor check` run there with a fake `nft` first on PATH that answers
one targeted `nft -j list map ... service-ips` badly (nothing, "No such file or directory", garbage,
cut short, another object, or never) and passes every other command to the real nft. A bad answer is
a failed source, never "the map does not exist"; a map is missing only when the kernel's list of the
table's sets does not name it. Also: the text fallback judged whole, and the generation fast path.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_nftables import CLUSTER_IP_ONLY, NFT, nftables_node
from tests.testbed import BIN_PATH, PY, REPO, Node, by_id, gone, problems

pytestmark = pytest.mark.netns

FAKE_NFT = """#!/bin/sh
# stands in for an nft that answers `nft -j list map ip kube-proxy service-ips` badly
if [ "$1 $2 $3 $6" = "-j list map service-ips" ] || [ "$1 $2 $3 $4" = "-t -y list table" ]; then
  case "$FAKE_NFT" in
    empty) exit 0 ;;
    enoent) echo "Error: No such file or directory" >&2; echo "list map ip kube-proxy service-ips" >&2; exit 1 ;;
    garbage) printf 'Segmentation fault\\n\\377\\n'; exit 0 ;;
    truncated) /usr/sbin/nft "$@" | head -c 300; exit 0 ;;
    other) printf '{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]}\\n'; exit 0 ;;
    hang) sleep 300 & echo $! > "$PIDFILE"; sleep 300 ;;
  esac
fi
exec /usr/sbin/nft "$@"
"""


def fake_nft(tmp: Path) -> Path:
    d = tmp / "fakebin"
    d.mkdir(exist_ok=True)
    (d / "nft").write_text(FAKE_NFT)
    (d / "nft").chmod(0o755)
    return d


def check_with(node: Node, tmp: Path, mode: str, *args: str) -> tuple[dict[str, Any], float]:
    """`svcdoctor check --json` in the node with the fake nft first on PATH, and its wall time."""
    env = [f"PATH={fake_nft(tmp)}:{BIN_PATH}", f"FAKE_NFT={mode}", f"PIDFILE={tmp / 'grandchild.pid'}"]
    t0 = time.monotonic()
    res = subprocess.run(node.argv("env", *env, PY, "-m", "agent", "check", "--json", "--node-name", "test-node",
                                   *args), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode in (0, 1), res.stderr
    return json.loads(res.stdout), time.monotonic() - t0


def nftables_source(doc: dict[str, Any]) -> dict[str, Any]:
    (src,) = [s for s in doc["sources"] if s["name"] == "nftables"]
    return src


WITH_CLUSTER = ("--cluster-state", str(NFT / f"{CLUSTER_IP_ONLY}.cluster.json"), "--grace", "0")


@pytest.mark.parametrize(("mode", "reason"), [
    ("empty", "printed nothing"),
    ("enoent", "exited 1: Error: No such file or directory"),
    ("garbage", "printed what does not parse as JSON"),
    ("truncated", "printed what does not parse as JSON"),
    ("other", "printed an unexpected document: 0 map objects where one was asked for"),
])
def test_a_bad_nft_answer_fails_the_source_and_never_says_map_missing(node: Node, tmp_path: Path, mode: str,
                                                                      reason: str) -> None:
    nftables_node(node, CLUSTER_IP_ONLY)
    doc, _ = check_with(node, tmp_path, mode, *WITH_CLUSTER)
    src = nftables_source(doc)
    assert not src["ok"] and reason in src["error"], src
    assert "nft -j list map ip kube-proxy service-ips" in src["error"]
    # nothing judged from the failed read: no nftables.* and no rules.* finding, only the failure
    assert problems(doc) == {("agent.source_failed", "nftables")}


def test_a_hung_nft_is_killed_within_source_timeout_with_its_grandchild(node: Node, tmp_path: Path) -> None:
    nftables_node(node, CLUSTER_IP_ONLY)
    doc, took = check_with(node, tmp_path, "hang", "--source-timeout", "3s", *WITH_CLUSTER)
    src = nftables_source(doc)
    assert not src["ok"] and ("did not finish within" in src["error"] or "timed out after 3s" in src["error"])
    assert problems(doc) == {("agent.source_failed", "nftables")}
    assert took < 45  # --source-timeout bounds the read (before: a fixed 60 s for nftables)
    assert gone(int((tmp_path / "grandchild.pid").read_text()))


def test_a_map_the_table_does_not_hold_is_missing(node: Node, tmp_path: Path) -> None:
    """The positive case: the kernel's list of the table's sets does not name `firewall-ips`."""
    nftables_node(node, CLUSTER_IP_ONLY)
    node.sh("nft", "flush", "chain", "ip", "kube-proxy", "firewall-check")
    node.sh("nft", "delete", "map", "ip", "kube-proxy", "firewall-ips")
    doc, _ = check_with(node, tmp_path, "real", "--no-api")
    assert nftables_source(doc)["ok"]
    assert problems(doc) == {("nftables.map_missing", "table ip kube-proxy: firewall-ips")}
    (f,) = by_id(doc, "nftables.map_missing")
    assert f["evidence"]["map"] == "firewall-ips"


TEXT_FALLBACK = textwrap.dedent("""
    import json, sys
    from unittest import mock
    import agent.collect.nftables as nft
    from agent.collect.base import CollectContext, CollectError
    from agent.config import Config
    refused = PermissionError(1, "Operation not permitted")
    with mock.patch.object(nft, "read_chains", side_effect=refused), \\
            mock.patch.object(nft, "list_sets", side_effect=refused), \\
            mock.patch.object(nft, "list_tables", side_effect=refused), \\
            mock.patch.object(nft, "read_generation", side_effect=refused):
        try:
            state = nft.collect(CollectContext(cfg=Config(), deadline_s=30))
            table = state.tables[0]
            print(json.dumps({"maps": sorted(table.maps), "sets": sorted(table.sets), "chains": len(table.chains),
                              "mode": state.read_mode}))
        except CollectError as exc:
            print(json.dumps({"error": str(exc)}))
""")


def fallback(node: Node, tmp: Path, mode: str) -> dict[str, Any]:
    env = [f"PATH={fake_nft(tmp)}:{BIN_PATH}", f"FAKE_NFT={mode}"]
    out: dict[str, Any] = json.loads(node.sh("env", *env, PY, "-c", TEXT_FALLBACK).stdout)
    return out


def test_netlink_refused_the_text_listing_names_the_maps(node: Node, tmp_path: Path) -> None:
    """Stands in for a kernel or seccomp profile that refuses every nf_tables netlink request: which
    maps exist then comes from nft's listing of the table, and a map it does not declare is absent."""
    node.nft_load((NFT / f"{CLUSTER_IP_ONLY}.nft").read_text())
    node.sh("nft", "flush", "chain", "ip", "kube-proxy", "firewall-check")
    node.sh("nft", "delete", "map", "ip", "kube-proxy", "firewall-ips")
    out = fallback(node, tmp_path, "real")
    assert out["maps"] == ["no-endpoint-nodeports", "no-endpoint-services", "service-ips", "service-nodeports"]
    assert out["sets"] == ["cluster-ips", "nodeport-ips"] and out["chains"] > 10
    assert "nft -t -y list table (netlink read failed: [Errno 1] Operation not permitted)" in out["mode"]


@pytest.mark.parametrize("mode", ["truncated", "empty", "garbage"])
def test_netlink_refused_a_listing_that_is_not_whole_fails_the_read(node: Node, tmp_path: Path, mode: str) -> None:
    node.nft_load((NFT / f"{CLUSTER_IP_ONLY}.nft").read_text())
    out = fallback(node, tmp_path, mode)
    assert "printed what is not a whole listing" in out.get("error", ""), out


READER = textwrap.dedent("""
    import json, subprocess, sys
    from unittest import mock
    import agent.collect.nftables as nft
    from agent.collect.base import CollectContext
    from agent.config import Config
    ctx = CollectContext(cfg=Config(), deadline_s=30)
    reader = nft.NftablesReader()
    calls = []
    real = nft.run_command
    def counting(argv, *a, **kw):
        calls.append(" ".join(argv))
        return real(argv, *a, **kw)
    def change(*cmd):
        subprocess.run(["nft", *cmd], check=True)
    def services(state):
        return len(state.tables[0].maps["service-ips"])
    with mock.patch.object(nft, "run_command", side_effect=counting):
        out = {}
        first = reader.read(ctx)
        out["first"] = len(calls)
        second = reader.read(ctx)
        out["second"] = len(calls) - out["first"]
        out["same_tables"] = second.tables is first.tables
        out["fresher"] = second.read_at > first.read_at
        change("delete", "element", "ip", "kube-proxy", "service-ips", "{ 172.30.0.41 . tcp . 80 }")
        third = reader.read(ctx)
        out["third"] = len(calls) - out["first"] - out["second"]
        out["services"] = [services(first), services(second), services(third)]
        change("add", "table", "inet", "someone-else")  # any nf_tables change: read again
        before = len(calls)
        fourth = reader.read(ctx)
        out["fourth"] = len(calls) - before
        out["other_tables"] = fourth.other_tables
        out["fresh_reader"] = services(nft.NftablesReader().read(ctx))
    print(json.dumps(out))
""")


def test_an_unchanged_generation_skips_the_read_and_a_change_reads_again(node: Node) -> None:
    node.nft_load((NFT / f"{CLUSTER_IP_ONLY}.nft").read_text())
    out = json.loads(node.sh(PY, "-c", READER).stdout)
    assert out["first"] > 1 and out["second"] == 0  # no nft started while nothing changed
    assert out["same_tables"] and out["fresher"]
    assert out["third"] == out["first"]  # a whole read after kube-proxy's table changed
    assert out["services"][0] == out["services"][1] == out["services"][2] + 1 == out["fresh_reader"] + 1
    assert out["fourth"] == out["first"] and out["other_tables"] == ["inet someone-else"]
