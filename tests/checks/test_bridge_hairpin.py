"""Hairpin findings offline: kubelet's effective mode x the active CNI config x bridge/port state."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.checks.hairpin import hairpin_severity, services_backed
from agent.checks.hairpin_mode import hairpin_mode
from agent.collect.cni import parse_config
from agent.collect.process import parse_flags
from agent.model import ProcessInfo, Snapshot, Source
from agent.model.cluster import ClusterState, EndpointSpec, PodSpec, ServicePortSpec, ServiceSpec, SlicePort, SliceSpec
from agent.model.cni import CniState
from agent.model.links import Bridge, BridgePort, Links
from agent.report.metrics_bridge import families
from agent.runner import Report
from tests.checks.helpers import found, run_checks
from tests.snapshots import failed, healthy

DATA = Path(__file__).resolve().parents[1] / "data"
VARIANTS: dict[str, dict[str, Any]] = tomllib.loads((DATA / "kubelet" / "variants.toml").read_text())
HAIRPIN_IDS = {"kubelet.hairpin_mode_none", "bridge.not_promiscuous", "bridge.hairpin_disabled",
               "cni.hairpin_disabled"}


def kubelet(*flags: str, config: str | None = None) -> ProcessInfo:
    argv = ["/usr/bin/kubelet", "--kubeconfig=/etc/kubernetes/kubelet.conf", *flags]
    cfg = yaml.safe_load((DATA / "kubelet" / config).read_text()) if config else None
    return ProcessInfo(pid=200, comm="kubelet", argv=argv, flags=parse_flags(argv), root="/proc/200/root",
                       env_path=[], config_path="/var/lib/kubelet/config.yaml" if config else None, config=cfg)


def variant(name: str) -> ProcessInfo:
    v = VARIANTS[name]
    return kubelet(*v["flags"], config=v.get("config"))


def cni(*files: str) -> CniState:
    return CniState(conf_dir="/etc/cni/net.d", configs=[
        parse_config(f"/etc/cni/net.d/{f}", (DATA / "cni" / f).read_text()) for f in sorted(files)])


def pod_port(name: str, ip: str, *, hairpin: bool, index: int = 10) -> BridgePort:
    return BridgePort(name, index, hairpin=hairpin, peer_netns_id=index, kind="veth", peer_index=2,
                      peer_name="eth0", peer_netns="/run/netns/cni-x", pod_ips=[ip])


def node(bridges: list[Bridge], kl: ProcessInfo | Source[Any], conf: CniState | Source[Any] | None,
         cluster: ClusterState | None = None) -> Snapshot:
    parts: dict[str, Any] = {"links": Links(bridges=bridges), "kubelet": kl}
    if conf is not None:
        parts["cni"] = conf
    if cluster is not None:
        parts["cluster"] = cluster
    return healthy(**parts)


def cni0(*ports: BridgePort, promisc: bool = False, name: str = "cni0") -> Bridge:
    return Bridge(name, 3, promiscuous=promisc, up=True, ports=list(ports))


def cluster_with(endpoints: dict[str, str], pods: dict[str, str], headless: bool = False) -> ClusterState:
    """endpoints: ip -> "ns/svc" (a ClusterIP Service with port http 80 -> 8080); pods: ip -> "ns/pod"."""
    services, slices = [], []
    for n, (ip, svc) in enumerate(sorted(endpoints.items())):
        ns, name = svc.split("/")
        services.append(ServiceSpec(namespace=ns, name=name, type="ClusterIP",
                                    cluster_ips=["None" if headless else f"10.96.0.{n + 10}"],
                                    ports=[ServicePortSpec(name="http", protocol="TCP", port=80)]))
        slices.append(SliceSpec(namespace=ns, name=f"{name}-abcde", service=name, address_type="IPv4",
                                ports=[SlicePort(name="http", port=8080, protocol="TCP")],
                                endpoints=[EndpointSpec(address=ip, node_name="test-node")]))
    return ClusterState(origin="file test", fetched_at=0.0, services=services, slices=slices,
                        pods=[PodSpec(namespace=p.split("/")[0], name=p.split("/")[1], ips=[ip])
                              for ip, p in pods.items()])


def hairpin_found(snap: Snapshot) -> set[tuple[str, str]]:
    return {f for f in found(snap) if f[0] in HAIRPIN_IDS}


# kubelet's effective mode -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_kubelet_variant_effective_mode(name: str) -> None:
    v = VARIANTS[name]
    mode = hairpin_mode(variant(name))
    assert (mode.configured.value, mode.configured.source, mode.runtime.name, mode.effective) == (
        v["configured"], v["source"], v["runtime"], v["effective"]), v["about"]


def test_kubelet_hairpin_mode_info_states_configured_and_effective() -> None:
    snap = node([], variant("dockershim_cni_promiscuous_falls_back"), None)
    (info,) = [f for f in run_checks(snap) if f.id == "kubelet.hairpin_mode"]
    assert info.severity == "info"
    assert (info.evidence["configured"], info.evidence["effective"]) == ("promiscuous-bridge", "hairpin-veth")
    assert "kubenet" in info.evidence["reason"]


def test_invalid_mode_on_dockershim() -> None:
    assert hairpin_mode(kubelet("--container-runtime=docker", "--hairpin-mode=bogus")).effective == "invalid"


# kubelet.hairpin_mode_none ------------------------------------------------------------------------------

def test_mode_none_with_pods_on_a_bridge_warns() -> None:
    snap = node([cni0(pod_port("veth1", "10.244.0.5", hairpin=False))], variant("config_only_none_dockershim"), None)
    assert hairpin_found(snap) == {("kubelet.hairpin_mode_none", "test-node")}


def test_mode_none_without_pods_is_quiet() -> None:
    snap = node([cni0()], variant("config_only_none_dockershim"), None)
    assert hairpin_found(snap) == set()


def test_mode_none_but_cni_sets_hairpin_is_quiet() -> None:
    snap = node([cni0(pod_port("veth1", "10.244.0.5", hairpin=True))], variant("config_only_none_dockershim"),
                cni("10-flannel.conflist"))
    assert hairpin_found(snap) == set()


# bridge.not_promiscuous ---------------------------------------------------------------------------------

@pytest.mark.parametrize("promisc", [False, True])
def test_kubenet_promiscuous_bridge_needs_promisc_cbr0(promisc: bool) -> None:
    bridge = cni0(pod_port("veth1", "10.64.0.5", hairpin=False), promisc=promisc, name="cbr0")
    snap = node([bridge], variant("dockershim_kubenet_promiscuous"), None)
    assert hairpin_found(snap) == (set() if promisc else {("bridge.not_promiscuous", "cbr0")})


@pytest.mark.parametrize("promisc", [False, True])
def test_containerd_default_conflist_needs_promisc_cni0(promisc: bool) -> None:
    bridge = cni0(pod_port("veth1", "10.88.0.5", hairpin=False), promisc=promisc)
    snap = node([bridge], variant("kubeadm_containerd"), cni("10-containerd-net.conflist"))
    assert hairpin_found(snap) == (set() if promisc else {("bridge.not_promiscuous", "cni0")})


# bridge.hairpin_disabled --------------------------------------------------------------------------------

def test_crio_hairpin_conflist_port_off_is_a_warning_without_cluster_state() -> None:
    ports = [pod_port("veth1", "10.85.0.5", hairpin=True, index=10),
             pod_port("veth2", "10.85.0.6", hairpin=False, index=11)]
    snap = node([cni0(*ports)], variant("crio_config_hairpin_veth"), cni("11-crio-ipv4-bridge.conflist"))
    got = [f for f in run_checks(snap) if f.id in HAIRPIN_IDS]
    assert [(f.id, f.subject, f.severity) for f in got] == [("bridge.hairpin_disabled", "veth2", "warning")]
    ev = got[0].evidence
    assert (ev["bridge"], ev["pod"], ev["services"]) == ("cni0", "10.85.0.6", [])
    assert ev["file"] == "/sys/devices/virtual/net/cni0/brif/veth2/hairpin_mode"
    assert ev["required_by"] == "/etc/cni/net.d/11-crio-ipv4-bridge.conflist: hairpinMode true"


def test_port_backing_a_service_endpoint_is_critical_and_names_pod_and_services() -> None:
    ports = [pod_port("veth1", "10.85.0.5", hairpin=False, index=10),
             pod_port("veth2", "10.85.0.6", hairpin=False, index=11)]
    cluster = cluster_with({"10.85.0.5": "shop/cart"}, {"10.85.0.5": "shop/cart-7d9f", "10.85.0.6": "shop/batch-1"})
    snap = node([cni0(*ports)], variant("kubeadm_containerd"), cni("11-crio-ipv4-bridge.conflist"), cluster)
    got = {f.subject: f for f in run_checks(snap) if f.id == "bridge.hairpin_disabled"}
    assert {s: f.severity for s, f in got.items()} == {"veth1": "critical", "veth2": "warning"}
    assert (got["veth1"].evidence["pod"], got["veth1"].evidence["services"]) == ("shop/cart-7d9f", ["shop/cart:http"])
    assert got["veth2"].evidence["pod"] == "shop/batch-1"


def test_dockershim_hairpin_veth_requires_hairpin_on_every_pod_bridge() -> None:
    bridges = [cni0(pod_port("veth1", "10.244.0.5", hairpin=False, index=10)),
               cni0(pod_port("veth9", "172.17.0.2", hairpin=True, index=12), name="docker0")]
    snap = node(bridges, variant("dockershim_cni_promiscuous_falls_back"), cni("10-bridge.conf"))
    assert hairpin_found(snap) == {("bridge.hairpin_disabled", "veth1")}


def test_hairpin_conf_for_another_bridge_does_not_apply() -> None:
    snap = node([cni0(pod_port("veth1", "10.85.0.5", hairpin=False), name="kube-bridge")],
                variant("kubeadm_containerd"), cni("11-crio-ipv4-bridge.conflist"))
    assert hairpin_found(snap) == set()


def test_non_pod_ports_are_ignored() -> None:
    uplink = BridgePort("eth1", 5, hairpin=False, kind=None)
    same_ns_veth = BridgePort("vethx", 6, hairpin=False, kind="veth", peer_index=7)
    snap = node([cni0(uplink, same_ns_veth)], variant("crio_config_hairpin_veth"),
                cni("11-crio-ipv4-bridge.conflist"))
    assert hairpin_found(snap) == set()


# cni.hairpin_disabled -----------------------------------------------------------------------------------

def test_bridge_conf_without_hairpin_on_containerd_warns() -> None:
    snap = node([cni0(pod_port("veth1", "10.200.0.5", hairpin=False))], variant("kubeadm_containerd"),
                cni("10-bridge.conf"))
    assert hairpin_found(snap) == {("cni.hairpin_disabled", "/etc/cni/net.d/10-bridge.conf")}
    (f,) = [f for f in run_checks(snap) if f.id == "cni.hairpin_disabled"]
    assert (f.evidence["hairpin_mode"], f.evidence["bridge"], f.evidence["pod_ports"]) == ("unset", "cni0", 1)


def test_explicit_hairpin_false_says_false() -> None:
    conf = cni("11-crio-ipv4-bridge.conflist")
    assert conf.configs[0].bridge is not None
    conf.configs[0].bridge.hairpin_mode = False
    snap = node([cni0(pod_port("veth1", "10.85.0.5", hairpin=False))], variant("kubeadm_containerd"), conf)
    (f,) = [f for f in run_checks(snap) if f.id == "cni.hairpin_disabled"]
    assert f.evidence["hairpin_mode"] == "false"


def test_bridge_conf_without_hairpin_is_kubelets_job_on_dockershim() -> None:
    snap = node([cni0(pod_port("veth1", "10.200.0.5", hairpin=True))], variant("flag_only_hairpin_veth_dockershim"),
                cni("10-bridge.conf"))
    assert hairpin_found(snap) == set()


def test_cni_hairpin_with_cluster_state_counts_only_pods_backing_a_service() -> None:
    ports = [pod_port("veth1", "10.200.0.5", hairpin=False)]
    base = [cni0(*ports)], variant("kubeadm_containerd"), cni("10-bridge.conf")
    nobody = cluster_with({"10.9.9.9": "other/svc"}, {})
    backs = cluster_with({"10.200.0.5": "shop/cart"}, {})
    assert hairpin_found(node(*base, nobody)) == set()
    assert hairpin_found(node(*base, cluster_with({}, {}))) == set()  # cluster known, no Service at all
    assert hairpin_found(node(*base, cluster_with({"10.200.0.5": "shop/cart"}, {}, headless=True))) == set()
    assert hairpin_found(node(*base, backs)) == {("cni.hairpin_disabled", "/etc/cni/net.d/10-bridge.conf")}


def test_flannel_conf_is_cni0_with_hairpin_from_delegate() -> None:
    conf = cni("10-flannel.conflist").active
    assert conf is not None and conf.bridge is not None
    assert (conf.name, conf.bridge.bridge, conf.bridge.hairpin_mode, conf.bridge.via) == (
        "cbr0", "cni0", True, "flannel delegate")
    snap = node([cni0(pod_port("veth1", "10.244.0.5", hairpin=False))], variant("kubeadm_containerd"),
                cni("10-flannel.conflist"))
    assert hairpin_found(snap) == {("bridge.hairpin_disabled", "veth1")}


# CNIs without a bridge ----------------------------------------------------------------------------------

@pytest.mark.parametrize("files,plugin", [(("10-calico.conflist", "calico-kubeconfig"), "calico"),
                                          (("05-cilium.conflist", "10-bridge.conf"), "cilium-cni")])
def test_no_bridge_cni_says_so_once_and_skips_bridge_checks(files: tuple[str, ...], plugin: str) -> None:
    conf = cni(*(f for f in files if f != "calico-kubeconfig"))
    bridge = cni0(pod_port("veth1", "10.1.0.5", hairpin=False), name="docker0")
    snap = node([bridge], variant("config_only_none_dockershim"), conf)
    got = run_checks(snap)
    assert [f.evidence["plugin"] for f in got if f.id == "cni.no_bridge"] == [plugin]
    assert {f.id for f in got} & HAIRPIN_IDS == set()


# failed sources -----------------------------------------------------------------------------------------

def test_failed_links_or_kubelet_source_gives_no_hairpin_problem() -> None:
    ports = [pod_port("veth1", "10.85.0.5", hairpin=False)]
    assert hairpin_found(healthy(links=failed("links"), kubelet=variant("kubeadm_containerd"),
                                 cni=cni("10-bridge.conf"))) == set()
    # kubelet unknown: the CNI's own hairpin requirement still holds, kubelet-based ones are not guessed
    snap = node([cni0(*ports)], failed("kubelet"), cni("11-crio-ipv4-bridge.conflist"))
    assert hairpin_found(snap) == {("bridge.hairpin_disabled", "veth1")}
    snap = node([cni0(*ports)], failed("kubelet"), cni("10-bridge.conf"))
    assert hairpin_found(snap) == set()


# helpers ------------------------------------------------------------------------------------------------

def test_severity_helper() -> None:
    assert services_backed(["10.0.0.1"], None) == []
    assert hairpin_severity([]) == "warning"
    assert hairpin_severity(["ns/a"]) == "critical"
    endpoints = {"10.0.0.2": ["b/x", "a/y"], "10.0.0.1": ["a/y"]}
    assert services_backed(["10.0.0.1", "10.0.0.2"], endpoints) == ["a/y", "b/x"]


def test_bridge_metrics() -> None:
    links = Links(bridges=[cni0(pod_port("veth1", "10.0.0.5", hairpin=True, index=10),
                                pod_port("veth2", "10.0.0.6", hairpin=False, index=11), promisc=True)])
    report = Report(snapshot=healthy(links=links), findings=(), proxy_mode=None, generated_at=0.0)
    got = {m.name: [(s.labels, s.value) for s in m.samples] for m in families(report)}
    assert got == {"svcdoctor_bridge_promiscuous": [({"bridge": "cni0"}, 1)],
                   "svcdoctor_bridge_ports": [({"bridge": "cni0"}, 2)],
                   "svcdoctor_bridge_ports_hairpin": [({"bridge": "cni0"}, 1)]}
