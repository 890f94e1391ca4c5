"""Offline tests of the foundation checks: kube-proxy, kubelet, conntrack, node prerequisites."""

from __future__ import annotations

import dataclasses

import pytest

from agent.model import ConntrackInfo, KubeProxyHTTP, Sysctls
from agent.model.links import Bridge, BridgePort, Links
from tests.checks.helpers import found, run_checks
from tests.snapshots import NOW, absent, failed, healthy, kube_proxy_process

N = "test-node"


def test_healthy_node_has_no_problems() -> None:
    assert found(healthy()) == set()


def test_healthy_node_reports_mode_as_info() -> None:
    info = [f for f in run_checks(healthy()) if f.id == "kube_proxy.mode"]
    assert len(info) == 1
    assert info[0].evidence == {"mode": "iptables", "source": "default", "version": "v1.31.2"}


def test_kube_proxy_absent_is_not_running() -> None:
    assert found(healthy(kube_proxy=absent("kube_proxy"))) == {("kube_proxy.not_running", N)}


def test_kube_proxy_source_failure_is_not_reported_as_not_running() -> None:
    snap = healthy(kube_proxy=failed("kube_proxy", "permission denied"))
    assert found(snap) == {("agent.source_failed", "kube_proxy")}


@pytest.mark.parametrize(("argv", "config", "mode", "source"), [
    (["--proxy-mode=ipvs"], None, "ipvs", "flag --proxy-mode"),
    (["--proxy-mode", "nftables"], None, "nftables", "flag --proxy-mode"),
    ([], {"mode": "nftables"}, "nftables", "config /var/lib/kube-proxy/config.conf: mode"),
    (["--proxy-mode=iptables"], {"mode": "ipvs"}, "iptables", "flag --proxy-mode"),
    ([], {"mode": ""}, "iptables", "default"),
])
def test_mode_precedence_flag_then_config_then_default(argv: list[str], config: dict[str, str] | None,
                                                       mode: str, source: str) -> None:
    snap = healthy(kube_proxy=kube_proxy_process(*argv, config=config))
    (f,) = [f for f in run_checks(snap) if f.id == "kube_proxy.mode"]
    assert (f.evidence["mode"], f.evidence["source"]) == (mode, source)


def test_userspace_mode_is_unsupported() -> None:
    snap = healthy(kube_proxy=kube_proxy_process("--proxy-mode=userspace"))
    assert found(snap) == {("kube_proxy.mode_unsupported", N)}


def test_unreadable_config_is_reported() -> None:
    proc = kube_proxy_process()
    proc.config_path, proc.config_error = "/var/lib/kube-proxy/config.conf", "No such file or directory"
    assert found(healthy(kube_proxy=proc)) == {("kube_proxy.config_unreadable", N)}


def test_healthz_503_is_unhealthy() -> None:
    http = dataclasses.replace(healthy().kube_proxy_http.data, healthz_status=503)  # type: ignore[type-var]
    assert found(healthy(kube_proxy_http=http)) == {("kube_proxy.unhealthy", N)}


def test_healthz_refused_while_running_is_unhealthy() -> None:
    http = KubeProxyHTTP(healthz_url="http://127.0.0.1:10256/healthz", healthz_error="Connection refused")
    assert ("kube_proxy.unhealthy", N) in found(healthy(kube_proxy_http=http))


def _sync(last_age: float, queued_age: float, *argv: str) -> set[tuple[str, str]]:
    http = dataclasses.replace(healthy().kube_proxy_http.data, metrics={  # type: ignore[type-var]
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds": NOW - last_age,
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds": NOW - queued_age})
    return found(healthy(kube_proxy_http=http, kube_proxy=kube_proxy_process(*argv)))


def test_sync_stale_when_queued_change_waits_past_twice_the_period() -> None:
    assert _sync(61, 50) == {("kube_proxy.sync_stale", N)}  # default period 30s


def test_sync_not_stale_within_twice_the_period() -> None:
    assert _sync(59, 50) == set()


def test_sync_not_stale_when_nothing_is_queued() -> None:
    assert _sync(3600, 3601) == set()  # quiet cluster: no change since the last sync


def test_sync_period_comes_from_flag() -> None:
    assert _sync(61, 50, "--iptables-sync-period=1m") == set()
    assert _sync(121, 50, "--iptables-sync-period=1m") == {("kube_proxy.sync_stale", N)}


def test_kubelet_absent_is_not_running() -> None:
    assert found(healthy(kubelet=absent("kubelet"))) == {("kubelet.not_running", N)}


def test_conntrack_module_missing() -> None:
    ct = ConntrackInfo(module_loaded=False, kube_proxy_binary="/usr/sbin/conntrack")
    assert found(healthy(conntrack=ct)) == {("conntrack.kernel_module_missing", N)}


@pytest.mark.parametrize(("count", "severity"), [(235_929, None), (235_930, "warning"), (262_144, "critical")])
def test_conntrack_table_full_thresholds(count: int, severity: str | None) -> None:
    ct = ConntrackInfo(module_loaded=True, count=count, max=262_144, kube_proxy_binary="/usr/sbin/conntrack")
    got = [f for f in run_checks(healthy(conntrack=ct)) if f.id == "conntrack.table_full"]
    assert [f.severity for f in got] == ([severity] if severity else [])


@pytest.mark.parametrize(("version", "severity"), [
    ("v1.31.2", "critical"), ("v1.29.0", "critical"), (None, "warning"), ("v1.32.0", None), ("v1.34.1", None)])
def test_conntrack_binary_needed_only_before_v1_32(version: str | None, severity: str | None) -> None:
    http = dataclasses.replace(healthy().kube_proxy_http.data, version=version)  # type: ignore[type-var]
    ct = ConntrackInfo(module_loaded=True, count=1, max=100, kube_proxy_binary=None)
    got = [f for f in run_checks(healthy(conntrack=ct, kube_proxy_http=http)) if f.id == "conntrack.binary_missing"]
    assert [f.severity for f in got] == ([severity] if severity else [])


def test_ip_forward_disabled() -> None:
    sysctls = Sysctls(values={"net/ipv4/ip_forward": "0", "net/ipv4/conf/all/route_localnet": "1"})
    assert found(healthy(sysctl=sysctls)) == {("node.ip_forward_disabled", N)}


def _bridge_with_pod() -> Links:
    return Links(bridges=[Bridge("cni0", 3, promiscuous=False, up=True,
                                 ports=[BridgePort("veth1", 4, hairpin=True)])])


@pytest.mark.parametrize("value", ["0", None])
def test_bridge_nf_call_iptables_off_with_pods_on_a_bridge(value: str | None) -> None:
    sysctls = Sysctls(values={"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/route_localnet": "1",
                              "net/bridge/bridge-nf-call-iptables": value})
    assert ("node.bridge_nf_call_iptables_disabled", "cni0") in found(healthy(sysctl=sysctls, links=_bridge_with_pod()))


def test_bridge_nf_call_iptables_irrelevant_without_a_bridge() -> None:
    sysctls = Sysctls(values={"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/route_localnet": "1",
                              "net/bridge/bridge-nf-call-iptables": "0"})
    assert found(healthy(sysctl=sysctls)) == set()


def test_route_localnet_disabled_when_localhost_nodeports_served() -> None:
    sysctls = Sysctls(values={"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/route_localnet": "0"})
    assert found(healthy(sysctl=sysctls)) == {("node.route_localnet_disabled", N)}


@pytest.mark.parametrize("argv", [
    ["--iptables-localhost-nodeports=false"], ["--nodeport-addresses=192.168.0.0/16"], ["--proxy-mode=ipvs"]])
def test_route_localnet_irrelevant_when_localhost_nodeports_are_not_served(argv: list[str]) -> None:
    sysctls = Sysctls(values={"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/route_localnet": "0"})
    snap = healthy(sysctl=sysctls, kube_proxy=kube_proxy_process(*argv))
    assert ("node.route_localnet_disabled", N) not in found(snap)
