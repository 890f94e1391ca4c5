"""IPVS mode's `-m set` iptables rules on real netns state: kube-proxy's sets restored with `ipset restore`, its
IPVS-mode rules (tests/fixtures/kube-proxy/ipvs/, reconstructed from its writeIptablesRules) with
iptables-restore on both backends, each fault applied with `iptables -D` as a person would, then
`svcdoctor check`. This kernel has no ip_vs, so every run also says ipvs.kernel_unavailable (true here); the
iptables comparison does not depend on the virtual servers.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.test_ipvs import start
from tests.integration.test_packets import BRIDGE_IP, CONNECT
from tests.ipvs_mutations import FAULTS, IPVS, IpvsFault
from tests.testbed import PY, Node, problems

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


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_each_deleted_rule_gives_its_finding(node: Node, fault: IpvsFault) -> None:
    """On iptables-nft (both backends save this dump alike but for the order of tables, and the clean node and the
    packet test run on legacy), to keep the suite inside its budget."""
    ipvs_node(node, "nft")
    node.sh("iptables-nft", "-w", "60", *fault.command)
    _, doc = node.check("--no-api")
    assert findings(doc) == {(*fault.expect, fault.severity)}, fault.kind


CLUSTER_IP = "172.30.0.41"  # in KUBE-CLUSTER-IP as 172.30.0.41,tcp:80
RETURN_CLUSTER_IP = next(f for f in FAULTS if f.kind == "filter_cluster_ip_return")


def test_deleting_the_cluster_ip_return_refuses_pods_and_is_critical(node: Node) -> None:
    """The packet, both ways. A pod on a bridge connects to a ClusterIP; this kernel has no ip_vs, so a listener on
    the node at ClusterIP:80 (the address on kube-ipvs0) stands in for IPVS, which takes the packet at LOCAL_IN
    after filter INPUT has run, exactly where the listener receives it. With KUBE-IPVS-FILTER whole the connection
    is answered and nothing is reported; with its KUBE-CLUSTER-IP RETURN deleted the REJECT of new connections to
    kube-ipvs0's addresses refuses it, and svcdoctor says so, critical. (Only forwarded-in traffic is tested: the
    node's own connections to a VIP are taken by IPVS at LOCAL_OUT and never reach INPUT.)"""
    ipvs_node(node, "legacy")
    node.bridge("cni0")
    node.sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", "cni0")
    _, pod = node.pod_on_bridge("cni0", "10.180.0.7", hairpin=False)
    subprocess.run(["ip", "netns", "exec", pod, "ip", "route", "add", "default", "via", BRIDGE_IP], check=True)
    node.tcp_listener(node.name, CLUSTER_IP)  # stands in for IPVS, which this kernel lacks

    def from_pod() -> str:
        return subprocess.run(["ip", "netns", "exec", pod, PY, "-c", CONNECT, CLUSTER_IP, "80"], capture_output=True,
                              text=True, check=True).stdout.strip()

    assert from_pod() == "ok"
    _, doc = node.check("--no-api")
    assert findings(doc) == set()
    node.sh("iptables-legacy", "-w", "60", *RETURN_CLUSTER_IP.command)
    assert from_pod() == "ConnectionRefusedError"
    _, doc = node.check("--no-api")
    assert findings(doc) == {("ipvs.service_ips_rejected", "filter/KUBE-IPVS-FILTER/KUBE-CLUSTER-IP", "critical")}
    (hit,) = [f for f in doc["findings"] if f["id"] == "ipvs.service_ips_rejected"]
    assert (hit["evidence"]["set"], hit["evidence"]["set_members"]) == ("KUBE-CLUSTER-IP", 6)
