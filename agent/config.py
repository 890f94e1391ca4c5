"""One config object: where the host's filesystems are, and the agent's settings.

The same code runs on a host (`/proc`, `/sys`, `/`) and in a DaemonSet pod with the host mounted
(`--host-root /host` etc.), so no module hard-codes a host path: they all join onto these.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from agent.model import Severity

DEFAULT_PORT = 9100
# Where a binary may live on a host's PATH (kube-bench keeps such lists as data too).
HOST_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class Config:
    node_name: str = field(default_factory=lambda: os.environ.get("NODE_NAME") or socket.gethostname())
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    root: Path = Path("/")  # the host's root filesystem: /etc/cni/net.d, /var/log, binaries on its PATH
    source_timeout_s: float = 20.0
    listen: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    interval_s: float = 30.0
    severity_overrides: dict[str, Severity] = field(default_factory=dict)
    grace_s: float | None = None  # None: twice kube-proxy's sync period
    cluster_state: Path | None = None  # kubectl JSON instead of the live API
    kubeconfig: Path | None = None  # None: in-cluster config when KUBERNETES_SERVICE_HOST is set
    api: bool = True  # False: never contact the API server
    api_max_stale_s: float = 300.0  # how long the last good API state may stand in while the API is down
    tls_cert_file: Path | None = None  # serve over TLS with this certificate (and key), reloaded on change
    tls_key_file: Path | None = None
    auth: str = "none"  # "kubernetes": TokenReview + SubjectAccessReview for /findings and /metrics
    probes: bool = True  # False (--no-probes): the agent sends no traffic of its own

    def host(self, path: str) -> Path:
        """A host path, under the configured host root."""
        return self.root / path.lstrip("/")

    def procfs(self, *parts: str | int) -> Path:
        return self.proc.joinpath(*(str(p) for p in parts))
