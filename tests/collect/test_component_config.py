"""Config sources without ptrace: the known-fields filter, /configz's Go names, reading inside a process's
root, and the kube-proxy ConfigMap through the API stand-in (tests/standins/kube_apiserver.py, which
stands in for kube-apiserver's GET of one ConfigMap)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collect.component_config import KUBE_PROXY_KIND, KUBELET_KIND, ConfigRefused, parse
from agent.collect.kubeproxy_configmap import KubeProxyConfigMap
from agent.collect.kubeproxy_configz import from_configz
from agent.collect.local_addrs import refusal
from agent.collect.named_file import Unreadable, read_named_file, resolve_in
from tests.standins.kube_apiserver import FakeApiServer
from tests.testbed import DATA

KUBEADM = (DATA / "kubeadm" / "kube-proxy-config.conf").read_text()


def test_kubeadm_config_keeps_what_the_checks_read_and_drops_client_connection() -> None:
    config = parse(KUBEADM, KUBE_PROXY_KIND)
    assert config["clusterCIDR"] == "10.244.0.0/16" and "iptables" in config and "mode" in config
    assert "clientConnection" not in config and "logging" not in config


def test_kubelet_config_drops_authentication_and_headers() -> None:
    text = (DATA / "kubeadm" / "kubelet-config.yaml").read_text() + "staticPodURLHeader:\n  Authorization: [x]\n"
    config = parse(text, KUBELET_KIND)
    assert "authentication" not in config and "staticPodURLHeader" not in config
    assert config["kind"] == KUBELET_KIND


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=8, max_size=300))
def test_a_refusal_never_quotes_the_text(text: str) -> None:
    """Whatever a file holds, the error is about its shape: no line of it comes back."""
    try:
        parse(text, KUBE_PROXY_KIND)
    except ConfigRefused as exc:
        for line in text.splitlines():
            if len(line.strip()) >= 8:
                assert line.strip() not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=20), max_size=8))
def test_only_known_fields_survive(extra: dict[str, str]) -> None:
    text = yaml.safe_dump({**extra, "kind": KUBE_PROXY_KIND})
    config = parse(text, KUBE_PROXY_KIND)
    assert set(config) <= {"kind", "mode", "clusterCIDR", "apiVersion", "iptables", "ipvs", "nftables",
                           "featureGates", "hostnameOverride", "bindAddress", "healthzBindAddress",
                           "metricsBindAddress", "bindAddressHardFail", "enableProfiling",
                           "showHiddenMetricsForVersion", "detectLocalMode", "detectLocal", "nodePortAddresses",
                           "oomScoreAdj", "conntrack", "configSyncPeriod", "portRange", "syncPeriod",
                           "minSyncPeriod", "linux"}


def test_configz_go_names_become_the_config_files_names() -> None:
    body = json.dumps({"kubeproxy.config.k8s.io": {
        "Mode": "nftables", "ClusterCIDR": "10.244.0.0/16", "HealthzBindAddress": "0.0.0.0:10256",
        "SyncPeriod": "45s", "NFTables": {"MasqueradeAll": False, "SyncPeriod": ""},
        "IPTables": {"LocalhostNodePorts": True, "SyncPeriod": "30s"},
        "ClientConnection": {"Kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf"}}})
    config = from_configz(body)
    assert config["mode"] == "nftables" and config["clusterCIDR"] == "10.244.0.0/16"
    assert config["nftables"]["syncPeriod"] == "45s"  # 1.29+: one top-level period, for the running mode
    assert config["iptables"] == {"localhostNodePorts": True, "syncPeriod": "30s"}
    assert "clientConnection" not in config


@pytest.mark.parametrize("body", ["not json", "[]", '{"other": {}}'])
def test_configz_without_the_group_is_refused(body: str) -> None:
    with pytest.raises(ConfigRefused):
        from_configz(body)


def test_symlinks_resolve_inside_the_processs_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/kube-proxy/..2024").mkdir(parents=True)
    (root / "var/lib/kube-proxy/..2024/config.conf").write_text(KUBEADM)
    (root / "var/lib/kube-proxy/..data").symlink_to("..2024")  # the ConfigMap volume's layout
    (root / "var/lib/kube-proxy/config.conf").symlink_to("..data/config.conf")
    (root / "etc").mkdir()
    (root / "etc/abs").symlink_to("/var/lib/kube-proxy/config.conf")  # absolute: still inside root
    assert resolve_in(root, "/etc/abs") == root / "var/lib/kube-proxy/..2024/config.conf"
    assert read_named_file(root, "/var/lib/kube-proxy/config.conf", os.getuid()) == KUBEADM
    (root / "etc/hostname").write_text("inside\n")
    (root / "etc/up").symlink_to("../../../../../../etc/hostname")  # cannot climb out of root
    assert resolve_in(root, "/etc/up") == root / "etc/hostname"


def test_a_fifo_is_never_opened_for_reading(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(Unreadable, match="not a regular file"):
        read_named_file(tmp_path, "/fifo", os.getuid())  # O_NONBLOCK: no writer, no hang


@pytest.mark.parametrize(("url", "refused"), [
    ("http://127.0.0.1:10249/metrics", False),
    ("http://[::1]:10249/metrics", False),
    ("http://203.0.113.7:10256/healthz", True),
    ("http://kube-proxy.example:10256/healthz", True),
])
def test_only_node_local_urls_are_fetched(url: str, refused: bool) -> None:
    assert (refusal(url) is not None) == refused


def configmap_object(data: dict[str, str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
            "data": data}


def reader(api: FakeApiServer, tmp_path: Path) -> KubeProxyConfigMap:
    from agent.collect.kubeapi import api_client_from

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(api.kubeconfig())
    client, _ = api_client_from(str(kubeconfig))
    return KubeProxyConfigMap(client)


def test_configmap_is_read_through_the_api_and_cached(tmp_path: Path) -> None:
    api = FakeApiServer([configmap_object({"config.conf": KUBEADM.replace('mode: ""', "mode: nftables"),
                                           "kubeconfig.conf": "apiVersion: v1\nkind: Config\n"})])
    api.start()
    try:
        read = reader(api, tmp_path)
        config, source = read(5.0)
        assert config is not None and config["mode"] == "nftables"
        assert source.startswith("ConfigMap kube-system/kube-proxy key config.conf")
        read(5.0)
        gets = [r for r in api.requests if "/configmaps/" in r]
        assert gets == ["/api/v1/namespaces/kube-system/configmaps/kube-proxy"]  # the second came from the cache
    finally:
        api.stop()


def test_a_missing_configmap_is_said(tmp_path: Path) -> None:
    api = FakeApiServer([])
    api.start()
    try:
        config, said = reader(api, tmp_path)(5.0)
        assert config is None and "HTTP 404" in said
    finally:
        api.stop()
