"""kubelet's hairpin mode: what is configured, and what takes effect (pure, no I/O).

kubelet (`--hairpin-mode`, or `hairpinMode` in its KubeletConfiguration; flag wins) accepts
`promiscuous-bridge` (the default), `hairpin-veth` and `none`. Only the Docker integration ever acted
on it (dockershim in kubelet <= 1.23, cri-dockerd after), and there `promiscuous-bridge` only works
with the kubenet network plugin: with any other plugin it falls back to `hairpin-veth` (kubelet's own
effectiveHairpinMode). With containerd, CRI-O or any other CRI runtime the setting has no effect and
hairpin is the CNI plugin's job (the bridge plugin's `hairpinMode`).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.model import ProcessInfo
from agent.settings import Setting, pick

PROMISCUOUS_BRIDGE = "promiscuous-bridge"
HAIRPIN_VETH = "hairpin-veth"
NONE = "none"
VALID_MODES = (PROMISCUOUS_BRIDGE, HAIRPIN_VETH, NONE)
CNI = "cni"  # effective "mode" when kubelet leaves hairpin to the CNI plugin
INVALID = "invalid"

# Flags that only exist with the built-in dockershim (removed in 1.24): their presence dates the kubelet.
DOCKERSHIM_FLAGS = ("network-plugin", "docker-endpoint", "cni-conf-dir", "cni-bin-dir", "cni-cache-dir",
                    "network-plugin-mtu", "docker-root", "image-pull-progress-deadline", "non-masquerade-cidr")


@dataclass(frozen=True)
class Runtime:
    name: str  # dockershim, cri-dockerd, containerd, cri-o, remote
    endpoint: str | None
    source: str  # where it was read, for the evidence


@dataclass(frozen=True)
class HairpinMode:
    configured: Setting
    runtime: Runtime
    network_plugin: str | None  # dockershim's --network-plugin (kubenet, cni), None when not set
    effective: str  # promiscuous-bridge, hairpin-veth, none, cni, invalid
    reason: str


def classify_endpoint(endpoint: str) -> str:
    low = endpoint.lower()
    for needle, name in (("dockershim", "dockershim"), ("cri-dockerd", "cri-dockerd"),
                         ("containerd", "containerd"), ("crio", "cri-o")):
        if needle in low:
            return name
    return "remote"


def container_runtime(proc: ProcessInfo) -> Runtime:
    """Which runtime kubelet talks to. Before 1.24 the default was the built-in dockershim; after, the
    default endpoint is containerd's socket."""
    flags = proc.flags
    if flags.get("container-runtime") == "docker":
        return Runtime("dockershim", flags.get("container-runtime-endpoint"), "flag --container-runtime")
    endpoint = pick(proc, "container-runtime-endpoint", "containerRuntimeEndpoint", None)
    if endpoint.value:
        return Runtime(classify_endpoint(str(endpoint.value)), str(endpoint.value), endpoint.source)
    if flags.get("container-runtime") == "remote":
        return Runtime("remote", None, "flag --container-runtime")
    dated = sorted(f for f in DOCKERSHIM_FLAGS if f in flags)
    if dated:
        return Runtime("dockershim", None, f"default of kubelet <= 1.23 (it has --{dated[0]})")
    return Runtime("containerd", "unix:///run/containerd/containerd.sock", "default of kubelet >= 1.24")


def hairpin_mode(proc: ProcessInfo) -> HairpinMode:
    configured = pick(proc, "hairpin-mode", "hairpinMode", PROMISCUOUS_BRIDGE)
    configured = Setting(str(configured.value).strip(), configured.source)
    runtime = container_runtime(proc)
    plugin = proc.flags.get("network-plugin") or None
    mode = configured.value

    def result(effective: str, reason: str) -> HairpinMode:
        return HairpinMode(configured, runtime, plugin, effective, reason)

    if runtime.name == "cri-dockerd":
        # cri-dockerd reads its own --hairpin-mode/--network-plugin (not collected); kubelet's is not passed.
        return result(HAIRPIN_VETH, "cri-dockerd applies its own --hairpin-mode (default promiscuous-bridge, "
                                    "which falls back to hairpin-veth without kubenet); kubelet's setting is "
                                    "not passed to it")
    if runtime.name != "dockershim":
        return result(CNI, f"with {runtime.name} kubelet's hairpin setting has no effect: the CNI plugin "
                           "sets hairpin on pod ports (the bridge plugin's hairpinMode)")
    if mode not in VALID_MODES:
        return result(INVALID, f"{mode!r} is not a hairpin mode: kubelet refuses to start with it")
    if mode == PROMISCUOUS_BRIDGE and plugin != "kubenet":
        return result(HAIRPIN_VETH, "promiscuous-bridge only works with the kubenet network plugin; with "
                                    f"{plugin or 'no --network-plugin'} kubelet falls back to hairpin-veth")
    if mode == NONE:
        return result(NONE, "kubelet sets no hairpin on pod ports and leaves the bridge as it is")
    return result(mode, "as configured")
