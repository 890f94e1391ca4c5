"""IPv6 (issue 17.8): kube-proxy's own IPv6 dumps (tests/fixtures/kube-proxy-ipv6/ip6tables/) on an IPv6-only node
(one global IPv6 address, none of IPv4), both iptables backends. Only ip6tables is judged there: no IPv4
chain_missing for tables kube-proxy never writes on such a node; faults in the IPv6 rules are found and attributed,
with endpoints written `[ip]:port`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.mutations import Fault, faults
from tests.testbed import DATA, REPO, Node, by_id, problems

pytestmark = pytest.mark.netns

IP6 = REPO / "tests" / "fixtures" / "kube-proxy-ipv6" / "ip6tables"
FULL6 = sorted(p.name.removesuffix(".rules") for p in IP6.glob("*.rules")
               if not p.name.endswith("-save.rules") and p.name != "node-base6.rules")
BACKENDS = ("legacy", "nft")


def ipv6_node(node: Node, fixture: str, backend: str) -> None:
    """An IPv6-only node: kube-proxy (iptables mode) and kubelet as on kubeadm, the fixture's rules and the IPv6
    node around them (node-base6.rules), IPv6 forwarding on, the Node's InternalIP 2001:db8::1 on an interface."""
    node.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")  # (no dummy module here)
    for link in ("eth0", "eth1"):
        node.sh("ip", "link", "set", link, "up")
    node.sh("ip", "addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad")
    node.sysctl("net.ipv6.conf.all.forwarding", 1)
    node.kube_proxy("--hostname-override=test-node", config=DATA / "kubeadm" / "kube-proxy-config.conf")
    node.kubelet("--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
                 config=DATA / "kubeadm" / "kubelet-config.yaml")
    node.kube_proxy_http()
    node.iptables_restore((IP6 / f"{fixture}.rules").read_text(), backend, noflush=True, family=6)
    node.iptables_restore((IP6 / "node-base6.rules").read_text(), backend, noflush=True, family=6)


def node_name(fixture: str) -> str:
    items = json.loads((IP6 / f"{fixture}.cluster.json").read_text())["items"]
    return str(next(i["metadata"]["name"] for i in items if i["kind"] == "Node"))


def check6(node: Node, fixture: str) -> dict[str, Any]:
    _, doc = node.check("--cluster-state", str(IP6 / f"{fixture}.cluster.json"), "--node-name", node_name(fixture),
                        "--grace", "0")
    return doc


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fixture", FULL6)
def test_ipv6_only_node_with_kube_proxys_ipv6_rules_is_healthy(node: Node, fixture: str, backend: str) -> None:
    ipv6_node(node, fixture, backend)
    doc = check6(node, fixture)
    assert problems(doc) == set()
    assert not by_id(doc, "iptables.chain_missing")


# Both dumps hold the same rules (IPv6 never gets localhost NodePorts): the faults are made on one of them.
FAULTED = "v1.28_TestEnableLocalhostNodePortsIPv6"
CASES6 = [(FAULTED, fault) for fault in faults((IP6 / f"{FAULTED}.rules").read_text())]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("fixture", "fault"), CASES6, ids=[f"{f}-{x}" for f, x in CASES6])
def test_ipv6_fault_gives_its_finding_for_its_service(node: Node, fixture: str, fault: Fault, backend: str,
                                                      tmp_path: Path) -> None:
    ipv6_node(node, fixture, backend)
    for argv in fault.commands:
        node.sh(f"ip6tables-{backend}", "-w", "60", *argv)
    doc = check6(node, fixture)
    found = problems(doc)
    assert fault.expect in found, f"{fault.kind}: {found}"
    assert {s for _, s in found} <= {fault.expect[1], *fault.also}, f"{fault.kind} also blamed: {found}"
    for f in by_id(doc, "rules.endpoint_missing") + by_id(doc, "rules.endpoint_port_mismatch"):
        assert f["evidence"]["endpoint"].startswith("[ff06::c"), f["evidence"]
