"""The cni collector on a host root: <host-root>/etc/cni/net.d, in libcni's file-name order."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.collect.base import Absent, CollectContext
from agent.collect.cni import collect
from agent.config import Config
from tests.snapshots import kubelet_process

CNI_DATA = Path(__file__).resolve().parents[1] / "data" / "cni"


def _host(tmp: Path, *files: str, where: str = "etc/cni/net.d") -> Path:
    d = tmp / where
    d.mkdir(parents=True)
    for f in files:
        shutil.copy(CNI_DATA / f, d / f)
    return tmp


def test_reads_every_config_in_name_order_and_picks_the_first(tmp_path: Path) -> None:
    root = _host(tmp_path, "10-calico.conflist", "calico-kubeconfig", "05-cilium.conflist", "10-bridge.conf")
    state = collect(CollectContext(Config(root=root), 5))
    assert [c.file for c in state.configs] == ["/etc/cni/net.d/05-cilium.conflist", "/etc/cni/net.d/10-bridge.conf",
                                               "/etc/cni/net.d/10-calico.conflist"]
    assert state.active is not None and state.active.plugin_types == ["cilium-cni"]
    assert [c.plugin_types for c in state.configs][2] == ["calico", "portmap", "bandwidth"]


def test_bridge_settings_of_real_configs(tmp_path: Path) -> None:
    root = _host(tmp_path, "10-bridge.conf", "10-containerd-net.conflist", "11-crio-ipv4-bridge.conflist",
                 "10-flannel.conflist")
    got = {c.file.rsplit("/", 1)[1]: c.bridge for c in collect(CollectContext(Config(root=root), 5)).configs}
    assert {f: (b.bridge, b.hairpin_mode, b.promisc_mode) for f, b in got.items() if b} == {
        "10-bridge.conf": ("cni0", None, None),
        "10-containerd-net.conflist": ("cni0", None, True),
        "11-crio-ipv4-bridge.conflist": ("cni0", True, None),
        "10-flannel.conflist": ("cni0", True, None),
    }


def test_broken_file_is_recorded_and_skipped(tmp_path: Path) -> None:
    root = _host(tmp_path, "11-crio-ipv4-bridge.conflist")
    (root / "etc/cni/net.d/00-broken.conflist").write_text('{"name": "x", "plugins": [')
    (root / "etc/cni/net.d/01-empty.conflist").write_text('{"name": "x", "plugins": []}')
    state = collect(CollectContext(Config(root=root), 5))
    assert [c.error is not None for c in state.configs] == [True, True, False]
    assert state.active is not None and state.active.name == "crio"


def test_flannel_delegating_elsewhere_uses_no_bridge(tmp_path: Path) -> None:
    root = _host(tmp_path)
    (root / "etc/cni/net.d/10-flannel.conflist").write_text(
        '{"name": "f", "plugins": [{"type": "flannel", "delegate": {"type": "ipvlan", "master": "eth0"}}]}')
    (conf,) = collect(CollectContext(Config(root=root), 5)).configs
    assert conf.bridge is None and conf.main_plugin == "flannel"


def test_missing_dir_is_absent(tmp_path: Path) -> None:
    with pytest.raises(Absent):
        collect(CollectContext(Config(root=tmp_path), 5))


def test_kubelets_cni_conf_dir_is_followed(tmp_path: Path) -> None:
    root = _host(tmp_path, "10-flannel.conflist", where="etc/kubernetes/cni/net.d")
    kl = kubelet_process("--network-plugin=cni", "--cni-conf-dir=/etc/kubernetes/cni/net.d")
    state = collect(CollectContext(Config(root=root), 5, kubelet=kl))
    assert state.conf_dir == "/etc/kubernetes/cni/net.d" and len(state.configs) == 1
