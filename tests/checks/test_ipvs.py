"""IPVS mode: the netlink reader, the checks and the per-Service view (programmed_ports).

This kernel has no ip_vs, so the kernel is stood in for by the netlink replies it sends for an IPVS
service and dest dump: built from `tests/data/ipvs/overall.ipvsadm-Ln.txt` (a recorded `ipvsadm -Ln`
of one state) with pyroute2's IPVS message classes, in the kernel's layout (ip_vs_genl_fill_service /
ip_vs_genl_fill_dest: attribute order, 16-byte nf_inet_addr addresses, stats), encoded to bytes and
decoded again as the socket would. The collector's own dump loop runs against a stand-in socket that
answers with those messages; its result, rendered as `ipvsadm -Ln`, must equal the recording.
kube-ipvs0 and the ipsets on real netns state are in tests/integration/test_ipvs.py.
"""

from __future__ import annotations

import copy
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest
from pyroute2.netlink.generic import ipvs as genl

from agent.checks.expected import expected_ports
from agent.checks.programmed_ipvs import programmed_ports, programmed_services
from agent.checks.rules import compare
from agent.collect import ipvs as collector
from agent.collect.ipvs import parse_ipset_save, read_virtual_servers
from agent.model import KubeProxyHTTP, Snapshot, Source
from agent.model.cluster import ClusterState
from agent.model.ipvs import IpvsState, VirtualServer
from tests.checks.helpers import found
from tests.checks.test_nftables import OVERALL
from tests.checks.test_nftables import cluster as nft_cluster
from tests.snapshots import healthy, kube_proxy_process
from tests.testbed import DATA

IPVS_DATA = DATA / "ipvs"
NODE = "test-node"
FWD = {"Masq": 0, "Local": 1, "Tunnel": 2, "Route": 3}


# `ipvsadm -Ln` text <-> a state description ------------------------------------------------------------

@dataclass
class Dest:
    ip: str
    port: int
    fwd: str
    weight: int
    active: int
    inactive: int


@dataclass
class Service:
    proto: str
    ip: str
    port: int
    sched: str
    persistent: int | None
    dests: list[Dest] = field(default_factory=list)


def split_addr(text: str) -> tuple[str, int]:
    ip, _, port = text.rpartition(":")
    return ip.strip("[]"), int(port)


def parse_ipvsadm(text: str) -> list[Service]:
    services: list[Service] = []
    for line in text.splitlines()[3:]:
        parts = line.split()
        if parts[0] == "->":
            ip, port = split_addr(parts[1])
            services[-1].dests.append(Dest(ip, port, parts[2], int(parts[3]), int(parts[4]), int(parts[5])))
        else:
            ip, port = split_addr(parts[1])
            persistent = int(parts[parts.index("persistent") + 1]) if "persistent" in parts else None
            services.append(Service(parts[0].lower(), ip, port, parts[2], persistent))
    return services


def render_ipvsadm(vss: list[VirtualServer]) -> list[list[str]]:
    """The collector's view in `ipvsadm -Ln` layout, as tokens (column padding is not compared)."""
    out = [["IP", "Virtual", "Server", "version", "1.2.1", "(size=4096)"],
           ["Prot", "LocalAddress:Port", "Scheduler", "Flags"],
           ["->", "RemoteAddress:Port", "Forward", "Weight", "ActiveConn", "InActConn"]]
    for vs in sorted(vss, key=lambda v: (socket.inet_pton(socket.AF_INET, v.ip), v.port)):
        flags = ["persistent", str(vs.persistent_seconds)] if vs.persistent_seconds is not None else []
        out.append([vs.protocol.upper(), vs.address, vs.scheduler, *flags])
        for rs in vs.real_servers:
            out.append(["->", rs.address, "Masq", str(rs.weight), str(rs.active_connections),
                        str(rs.inactive_connections)])
    return out


# the kernel's netlink replies ---------------------------------------------------------------------------

class kernel_msg(genl.ipvsmsg):
    """pyroute2's ipvsmsg, with the address attributes taken as the raw 16-byte `union nf_inet_addr`
    the kernel puts on the wire (pyroute2's own type would write 4 bytes for IPv4)."""

    class service(genl.ipvsmsg.service):
        nla_map = tuple(("IPVS_SVC_ATTR_ADDR", "cdata") if n == "IPVS_SVC_ATTR_ADDR" else (n, t)
                        for n, t in genl.ipvsmsg.service.nla_map)

    class dest(genl.ipvsmsg.dest):
        nla_map = tuple(("IPVS_DEST_ATTR_ADDR", "cdata") if n == "IPVS_DEST_ATTR_ADDR" else (n, t)
                        for n, t in genl.ipvsmsg.dest.nla_map)


def inet_addr(ip: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return family, socket.inet_pton(family, ip).ljust(16, b"\0")


ZERO_STATS = {"attrs": [(f"IPVS_STATS_ATTR_{k}", 0) for k in
                        ("CONNS", "INPKTS", "OUTPKTS", "INBYTES", "OUTBYTES", "CPS", "INPPS", "OUTPPS", "INBPS",
                         "OUTBPS")]}


def wire(msg: genl.ipvsmsg) -> genl.ipvsmsg:
    """Encode to the bytes a netlink socket carries, and decode them as pyroute2's IPVS socket does."""
    msg["header"]["type"] = 0x1D  # a generic netlink family id
    msg.encode()
    data = bytes(msg.data[:msg["header"]["length"]])
    decoded = genl.ipvsmsg(data)
    decoded.decode()
    return decoded


def service_reply(s: Service) -> genl.ipvsmsg:
    """ip_vs_genl_fill_service(): AF, PROTOCOL, ADDR, PORT, SCHED_NAME, FLAGS, TIMEOUT, NETMASK, STATS, STATS64."""
    family, addr = inet_addr(s.ip)
    flags = 0x1 if s.persistent is not None else 0  # IP_VS_SVC_F_PERSISTENT
    msg = kernel_msg()
    msg["cmd"], msg["version"] = genl.IPVS_CMD_NEW_SERVICE, genl.GENL_VERSION
    msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", {"attrs": [
        ("IPVS_SVC_ATTR_AF", family), ("IPVS_SVC_ATTR_PROTOCOL", {"tcp": 6, "udp": 17, "sctp": 132}[s.proto]),
        ("IPVS_SVC_ATTR_ADDR", addr), ("IPVS_SVC_ATTR_PORT", s.port), ("IPVS_SVC_ATTR_SCHED_NAME", s.sched),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", s.persistent or 0),
        ("IPVS_SVC_ATTR_NETMASK", "255.255.255.255" if family == socket.AF_INET else "0.0.0.128"),
        ("IPVS_SVC_ATTR_STATS", ZERO_STATS), ("IPVS_SVC_ATTR_STATS64", ZERO_STATS)]})]
    return wire(msg)


def dest_reply(d: Dest) -> genl.ipvsmsg:
    """ip_vs_genl_fill_dest(): ADDR, PORT, FWD_METHOD, WEIGHT, TUN_*, U/L_THRESH, ACTIVE/INACT/PERSIST_CONNS,
    ADDR_FAMILY, STATS, STATS64."""
    family, addr = inet_addr(d.ip)
    msg = kernel_msg()
    msg["cmd"], msg["version"] = genl.IPVS_CMD_NEW_DEST, genl.GENL_VERSION
    msg["attrs"] = [("IPVS_CMD_ATTR_DEST", {"attrs": [
        ("IPVS_DEST_ATTR_ADDR", addr), ("IPVS_DEST_ATTR_PORT", d.port), ("IPVS_DEST_ATTR_FWD_METHOD", FWD[d.fwd]),
        ("IPVS_DEST_ATTR_WEIGHT", d.weight), ("IPVS_DEST_ATTR_TUN_TYPE", 0), ("IPVS_DEST_ATTR_TUN_PORT", 0),
        ("IPVS_DEST_ATTR_TUN_FLAGS", 0), ("IPVS_DEST_ATTR_U_THRESH", 0), ("IPVS_DEST_ATTR_L_THRESH", 0),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", d.active), ("IPVS_DEST_ATTR_INACT_CONNS", d.inactive),
        ("IPVS_DEST_ATTR_PERSIST_CONNS", 0), ("IPVS_DEST_ATTR_ADDR_FAMILY", family),
        ("IPVS_DEST_ATTR_STATS", ZERO_STATS), ("IPVS_DEST_ATTR_STATS64", ZERO_STATS)]})]
    return wire(msg)


class KernelStandIn:
    """Stands in for pyroute2.IPVS on a kernel with ip_vs: answers service and dest dumps with the
    kernel's replies, and a dest dump only for the service key the real socket would be given."""

    def __init__(self, services: list[Service]) -> None:
        self.services = services
        self.closed = False

    def service(self, command: str, service: Any = None) -> list[genl.ipvsmsg]:
        assert command == "dump" and service is None
        return [service_reply(s) for s in self.services]

    def dest(self, command: str, service: Any) -> list[genl.ipvsmsg]:
        assert command == "dump"
        key = dict(service.dump_key()["attrs"])
        wanted = (key["IPVS_SVC_ATTR_ADDR"], key["IPVS_SVC_ATTR_PORT"])
        (match,) = [s for s in self.services if (s.ip, s.port) == wanted]
        return [dest_reply(d) for d in match.dests]

    def close(self) -> None:
        self.closed = True


def recorded() -> str:
    return (IPVS_DATA / "overall.ipvsadm-Ln.txt").read_text()


def read_with_kernel(monkeypatch: pytest.MonkeyPatch, services: list[Service]) -> list[VirtualServer]:
    from agent import pyroute2_parts

    standin = KernelStandIn(services)
    monkeypatch.setattr(pyroute2_parts, "IPVS", lambda: standin)
    vss = read_virtual_servers()
    assert standin.closed
    return vss


def overall_state(monkeypatch: pytest.MonkeyPatch, services: list[Service] | None = None) -> IpvsState:
    return IpvsState(
        virtual_servers=read_with_kernel(monkeypatch, services or parse_ipvsadm(recorded())),
        interface_present=True,
        interface_addresses=sorted((IPVS_DATA / "overall.kube-ipvs0.txt").read_text().split()),
        ipsets=parse_ipset_save((IPVS_DATA / "overall.ipset-save.txt").read_text().splitlines()))


def ipvs_snapshot(state: IpvsState | Source[IpvsState], *, mode: str = "ipvs",
                  cluster: ClusterState | None = None) -> Snapshot:
    http = KubeProxyHTTP(healthz_url="http://127.0.0.1:10256/healthz", healthz_status=200, proxy_mode=mode,
                         version="v1.31.2")
    extra: dict[str, Any] = {"cluster": cluster} if cluster is not None else {}
    return healthy(kube_proxy=kube_proxy_process(f"--proxy-mode={mode}"), kube_proxy_http=http, ipvs=state, **extra)


# the reader ------------------------------------------------------------------------------------------------

def test_netlink_dump_read_back_equals_the_recorded_ipvsadm_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    vss = read_with_kernel(monkeypatch, parse_ipvsadm(recorded()))
    assert render_ipvsadm(vss) == [line.split() for line in recorded().splitlines()]


def test_weights_connections_persistence_and_ipv6_survive_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = Service("udp", "fd00:10:96::a", 53, "wrr", 600, [Dest("fd00:10:244::5", 5353, "Masq", 0, 4, 7)])
    (vs,) = read_with_kernel(monkeypatch, [svc])
    assert (vs.protocol, vs.address, vs.family, vs.scheduler, vs.persistent_seconds) == (
        "udp", "[fd00:10:96::a]:53", 6, "wrr", 600)
    (rs,) = vs.real_servers
    assert (rs.address, rs.weight, rs.active_connections, rs.inactive_connections) == (
        "[fd00:10:244::5]:5353", 0, 4, 7)


def test_kernel_without_ip_vs_is_reported_with_the_reason(tmp_path: Any) -> None:
    """The real code path on this kernel: /proc/net/ip_vs is faked so the collector does open IPVS(),
    and the generic netlink controller answers that there is no IPVS family."""
    from agent.collect.base import CollectContext
    from agent.config import Config

    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "ip_vs").write_text("IP Virtual Server version 1.2.1 (size=4096)\n")
    cfg = Config(proc=tmp_path, sys=tmp_path / "sys")
    state = collector.collect(CollectContext(cfg=cfg, deadline_s=5))
    assert not state.kernel_available
    assert state.kernel_error is not None and "IPVS netlink family is not available" in state.kernel_error
    no_proc = collector.collect(CollectContext(cfg=Config(proc=tmp_path / "none", sys=tmp_path / "sys"),
                                               deadline_s=5))
    assert (no_proc.kernel_available, no_proc.kernel_error) == (
        False, "ip_vs is not loaded (no /proc/net/ip_vs in this network namespace)")


def test_ipset_save_keeps_kube_proxys_sets_only() -> None:
    sets = parse_ipset_save(["create KUBE-CLUSTER-IP hash:ip,port family inet", "add KUBE-CLUSTER-IP 1.2.3.4,tcp:80",
                             "create other hash:ip", "add other 1.1.1.1", "create KUBE-LOOP-BACK hash:ip,port,ip"])
    assert sets == {"KUBE-CLUSTER-IP": ["1.2.3.4,tcp:80"], "KUBE-LOOP-BACK": []}


# checks ------------------------------------------------------------------------------------------------------

def test_whole_ipvs_state_gives_no_warning_or_critical(monkeypatch: pytest.MonkeyPatch) -> None:
    state = overall_state(monkeypatch)
    assert found(ipvs_snapshot(state)) == set()
    assert found(ipvs_snapshot(state, cluster=nft_cluster(OVERALL))) == set()


def test_kernel_unavailable_only_in_ipvs_mode() -> None:
    gone = IpvsState(kernel_available=False, kernel_error="ip_vs is not loaded (no /proc/net/ip_vs ...)")
    assert found(ipvs_snapshot(gone)) == {("ipvs.kernel_unavailable", NODE)}
    assert found(ipvs_snapshot(gone, mode="iptables")) == set()


def test_failed_read_is_not_a_missing_kernel() -> None:
    failed: Source[IpvsState] = Source("ipvs", ok=False, error="IPVS netlink: permission denied")
    assert found(ipvs_snapshot(failed)) == {("agent.source_failed", "ipvs")}


def test_interface_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    state = overall_state(monkeypatch)
    state.interface_present, state.interface_addresses = False, []
    assert found(ipvs_snapshot(state)) == {("ipvs.interface_missing", NODE)}


def test_vip_not_bound_names_its_service(monkeypatch: pytest.MonkeyPatch) -> None:
    state = overall_state(monkeypatch)
    state.interface_addresses.remove("172.30.0.41")
    assert found(ipvs_snapshot(state, cluster=nft_cluster(OVERALL))) == {
        ("ipvs.vip_not_bound", "ns1/svc1:p80")}
    assert found(ipvs_snapshot(state)) == {("ipvs.vip_not_bound", "172.30.0.41")}  # no API: named by address


def test_cluster_ip_missing_from_kube_cluster_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    state = overall_state(monkeypatch)
    state.ipsets["KUBE-CLUSTER-IP"].remove("172.30.0.44,tcp:80")
    assert found(ipvs_snapshot(state, cluster=nft_cluster(OVERALL))) == {
        ("ipvs.ipset_missing", "ns4/svc4:p80")}


# programmed_ports --------------------------------------------------------------------------------------------

def view(state: IpvsState, cl: ClusterState | None) -> dict[str, Any]:
    return {p.service: (sorted((d.kind, d.address, d.action) for d in p.dispatch), p.endpoints,
                        p.affinity_seconds, p.evidence.get("terminating")) for p in programmed_ports(state, cl)}


def test_programmed_ports_tie_virtual_servers_to_service_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    got = view(overall_state(monkeypatch), nft_cluster(OVERALL))
    assert got["ns1/svc1:p80"] == ([("cluster_ip", "172.30.0.41:80", "service")], ["10.180.0.1:80"], None,
                                   "10.180.0.9:80")
    assert got["ns2/svc2:p80"] == ([("cluster_ip", "172.30.0.42:80", "service"),
                                    ("external_ip", "192.168.99.22:80", "reject"),
                                    ("load_balancer_ip", "1.2.3.4:80", "reject"),
                                    ("node_port", ":3001", "reject")], ["10.180.0.2:80"], None, None)
    assert got["ns5/svc5:p80"] == ([("cluster_ip", "172.30.0.45:80", "service"),
                                    ("load_balancer_ip", "5.6.7.8:80", "service"),
                                    ("node_port", ":3002", "service")], ["10.180.0.3:80"], 10800, None)
    assert got["ns6/svc6:p80"] == ([("cluster_ip", "172.30.0.46:80", "reject")], [], None, None)
    assert sorted(got) == [f"ns{i}/svc{i}:p80" for i in range(1, 7)]


def test_without_the_api_kinds_come_from_kube_proxys_ipsets(monkeypatch: pytest.MonkeyPatch) -> None:
    got = view(overall_state(monkeypatch), None)
    assert got["?/tcp/5.6.7.8:80"][0] == [("load_balancer_ip", "5.6.7.8:80", "service")]
    assert got["?/tcp/192.168.99.33:80"][0] == [("external_ip", "192.168.99.33:80", "service")]
    assert got["?/tcp/192.168.0.2:3003"][0] == [("node_port", ":3003", "service")]


def test_comparison_agrees_and_draining_real_server_is_not_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    cl = nft_cluster(OVERALL)
    diffs = {(f.id, f.service) for f in compare(expected_ports(cl, NODE),
                                                programmed_services(overall_state(monkeypatch), cl))}
    # svc2 (externalTrafficPolicy Local, no local endpoint): IPVS keeps its external virtual servers with
    # no real server (they answer ICMP unreachable), which the comparison accepts for "drop".
    assert diffs == set()


def test_missing_real_server_is_endpoint_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    services = copy.deepcopy(parse_ipvsadm(recorded()))
    for s in services:
        s.dests = [d for d in s.dests if d.ip != "10.180.0.4"]
    cl = nft_cluster(OVERALL)
    diffs = {(f.id, f.service) for f in compare(expected_ports(cl, NODE),
                                                programmed_services(overall_state(monkeypatch, services), cl))}
    assert diffs == {("rules.endpoint_missing", "ns4/svc4:p80")}


def test_metrics_count_virtual_and_real_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.report.metrics_ipvs import families
    from agent.runner import Report

    report = Report(snapshot=ipvs_snapshot(overall_state(monkeypatch)), findings=(), proxy_mode="ipvs",
                    generated_at=0.0)
    got = {(m.name, tuple(sorted(s.labels.values()))): s.value for m in families(report) for s in m.samples}
    assert got == {("svcdoctor_ipvs_virtual_servers", ()): 13, ("svcdoctor_ipvs_real_servers", ("active",)): 11,
                   ("svcdoctor_ipvs_real_servers", ("terminating",)): 1}


def test_node_port_missing_on_one_node_ip_is_not_programmed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every node IP that serves NodePorts gets a virtual server per NodePort; one missing counts."""
    services = parse_ipvsadm(recorded())
    second = [copy.deepcopy(s) for s in services if s.ip == "192.168.0.2"]
    for s in second:
        s.ip = "10.0.0.2"  # the node's second address
    services += [s for s in second if s.port != 3003]  # NodePort 3003 only on 192.168.0.2
    cl = nft_cluster(OVERALL)
    state = overall_state(monkeypatch, services)
    (svc3,) = [p for p in programmed_ports(state, cl) if p.service == "ns3/svc3:p80"]
    assert [d.kind for d in svc3.dispatch] == ["cluster_ip"]
    assert svc3.evidence["node_port:3003_missing_on"] == "10.0.0.2"
    diffs = {(f.id, f.service) for f in compare(expected_ports(cl, NODE), programmed_services(state, cl))}
    assert diffs == {("rules.service_missing", "ns3/svc3:p80")}
