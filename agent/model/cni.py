"""Snapshot data for the cni source (filled by agent/collect/cni.py): the node's CNI network configs."""

from __future__ import annotations

from dataclasses import dataclass, field

# Main plugins that attach pods to a Linux bridge. flannel delegates to the bridge plugin unless its
# `delegate.type` says otherwise; everything else (calico, cilium-cni, ptp, ...) uses no bridge.
BRIDGE_PLUGINS = ("bridge", "flannel")


@dataclass
class BridgeConf:
    """What the bridge plugin will be told, after the delegating plugin's defaults."""

    bridge: str  # the bridge plugin's `bridge`, default cni0
    hairpin_mode: bool | None  # None: unset, which the bridge plugin treats as false
    promisc_mode: bool | None
    via: str  # "bridge" or "flannel delegate"


@dataclass
class CniConfig:
    file: str  # path on the host, e.g. /etc/cni/net.d/10-flannel.conflist
    name: str | None = None
    cni_version: str | None = None
    plugin_types: list[str] = field(default_factory=list)  # in chain order; the first is the main plugin
    bridge: BridgeConf | None = None  # set when the main plugin puts pods on a Linux bridge
    error: str | None = None  # why the file is not a usable config (container runtimes skip or fail on it)

    @property
    def main_plugin(self) -> str | None:
        return self.plugin_types[0] if self.plugin_types else None


@dataclass
class CniState:
    conf_dir: str  # as the host sees it
    configs: list[CniConfig] = field(default_factory=list)  # sorted by file name, as libcni sorts them

    @property
    def active(self) -> CniConfig | None:
        """The config the runtime uses: the first loadable one in file-name order (libcni's rule)."""
        return next((c for c in self.configs if c.error is None), None)
