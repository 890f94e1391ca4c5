"""CNI network configs as the container runtime sees them: <host-root>/etc/cni/net.d (or kubelet's
--cni-conf-dir, dockershim era), `.conf`, `.conflist` and `.json` files in file-name order (libcni's
order: the first loadable file is the one pods get).

Only what the hairpin checks need is kept: the plugin chain and, for a bridge-based main plugin, the
bridge name and its hairpinMode/promiscMode as the bridge plugin will receive them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.collect.base import Absent, CollectContext
from agent.model.cni import BridgeConf, CniConfig, CniState

DEFAULT_CONF_DIR = "/etc/cni/net.d"
EXTENSIONS = (".conf", ".conflist", ".json")
DEFAULT_BRIDGE = "cni0"  # the bridge plugin's default `bridge`
MAX_CONFIG_BYTES = 1 << 20


def _opt_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def bridge_conf(plugin: dict[str, Any]) -> BridgeConf | None:
    """The bridge plugin's settings for a main plugin, or None when that plugin uses no Linux bridge."""
    kind = plugin.get("type")
    if kind == "bridge":
        conf, via = plugin, "bridge"
    elif kind == "flannel":
        delegate = plugin.get("delegate")
        conf = delegate if isinstance(delegate, dict) else {}
        if conf.get("type", "bridge") != "bridge":  # flannel can delegate to ipvlan and others
            return None
        via = "flannel delegate"
    else:
        return None
    name = conf.get("bridge")
    return BridgeConf(bridge=name if isinstance(name, str) and name else DEFAULT_BRIDGE,
                      hairpin_mode=_opt_bool(conf.get("hairpinMode")),
                      promisc_mode=_opt_bool(conf.get("promiscMode")), via=via)


def parse_config(file: str, text: str) -> CniConfig:
    """One config file's content, as libcni would load it (a .conflist holds `plugins`, others one plugin)."""
    out = CniConfig(file=file)
    try:
        raw = json.loads(text)
    except ValueError as exc:
        out.error = f"not valid JSON: {exc}"
        return out
    if not isinstance(raw, dict):
        out.error = "not a JSON object"
        return out
    out.name = raw.get("name") if isinstance(raw.get("name"), str) else None
    out.cni_version = raw.get("cniVersion") if isinstance(raw.get("cniVersion"), str) else None
    plugins = raw.get("plugins") if file.endswith(".conflist") else [raw]
    if not isinstance(plugins, list) or not plugins or not all(isinstance(p, dict) for p in plugins):
        out.error = "no plugins list" if file.endswith(".conflist") else "not a plugin config"
        return out
    out.plugin_types = [str(p.get("type") or "") for p in plugins]
    if not out.plugin_types[0]:
        out.error = "the main plugin has no type"
        return out
    out.bridge = bridge_conf(plugins[0])
    return out


def conf_dir(ctx: CollectContext) -> str:
    if ctx.kubelet is not None and ctx.kubelet.flags.get("cni-conf-dir"):
        return ctx.kubelet.flags["cni-conf-dir"]
    return DEFAULT_CONF_DIR


def collect(ctx: CollectContext) -> CniState:
    where = conf_dir(ctx)
    path: Path = ctx.cfg.host(where)
    if not path.is_dir():
        raise Absent(f"no CNI config directory {where}")
    state = CniState(conf_dir=where)
    for entry in sorted(path.iterdir(), key=lambda p: p.name):
        if entry.suffix not in EXTENSIONS or not entry.is_file():
            continue
        host_path = f"{where.rstrip('/')}/{entry.name}"
        if entry.stat().st_size > MAX_CONFIG_BYTES:
            state.configs.append(CniConfig(file=host_path, error="larger than 1 MiB"))
            continue
        state.configs.append(parse_config(host_path, entry.read_text(errors="replace")))
    return state
