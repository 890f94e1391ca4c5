"""IPVS mode's `-m set` iptables rules on real netns state: kube-proxy's sets restored with `ipset restore`, its
IPVS-mode rules (tests/fixtures/kube-proxy/ipvs/, reconstructed from its writeIptablesRules) with
iptables-restore on both backends, each fault applied with `iptables -D` as a person would, then
`svcdoctor check`. This kernel has no ip_vs, so every run also says ipvs.kernel_unavailable (true here); the
iptables comparison does not depend on the virtual servers.
"""

from __future__ import annotations

import pytest

from tests.integration.test_ipvs import start
from tests.ipvs_mutations import FAULTS, IPVS, IpvsFault
from tests.testbed import Node, problems

pytestmark = pytest.mark.netns
BACKENDS = ("legacy", "nft")
NO_KERNEL = ("ipvs.kernel_unavailable", "test-node")
VIPS = sorted({line.split()[2] for line in (IPVS / "overall.ipset-restore.txt").read_text().splitlines()
               if line.startswith("add KUBE-IPVS-IPS ")})


def ipvs_node(node: Node, backend: str) -> None:
    """What kube-proxy's IPVS proxier leaves on a node: its sets, kube-ipvs0 holding the VIPs (a bridge stands in
    for the dummy link, as in test_ipvs.py), its iptables rules and the jumps into them, kubelet's chains."""
    node.sh("ipset", "restore", input=(IPVS / "overall.ipset-restore.txt").read_text())
    node.sh("ip", "link", "add", "kube-ipvs0", "type", "bridge")
    for vip in VIPS:
        node.sh("ip", "addr", "add", f"{vip}/32", "dev", "kube-ipvs0")
    node.iptables_restore((IPVS / "overall.rules").read_text(), backend, noflush=True)
    node.iptables_restore((IPVS / "overall.node-base.rules").read_text(), backend, noflush=True)
    start(node, "ipvs")


def findings(doc: dict[str, object]) -> set[tuple[str, str, str]]:
    """Every finding about rules and sources, info ones too (the facts kube_proxy.mode, kubelet.hairpin_mode left
    out), but the missing kernel."""
    return {(f["id"], f["service"] or f["subject"], f["severity"]) for f in doc["findings"]  # type: ignore[attr-defined]
            if f["id"].startswith(("ipvs.", "iptables.", "rules.", "agent.")) and (f["id"], f["subject"]) != NO_KERNEL}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_clean_ipvs_node_is_silent(node: Node, backend: str) -> None:
    ipvs_node(node, backend)
    _, doc = node.check("--no-api")
    assert problems(doc) == {NO_KERNEL}
    assert findings(doc) == set()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_each_deleted_rule_gives_its_finding(node: Node, fault: IpvsFault, backend: str) -> None:
    ipvs_node(node, backend)
    node.sh(f"iptables-{backend}", "-w", "60", *fault.command)
    _, doc = node.check("--no-api")
    assert findings(doc) == {(*fault.expect, fault.severity)}, fault.kind
