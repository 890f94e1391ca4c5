"""The parts of pyroute2 the agent uses (IPRoute, IPVS), without the rest of pyroute2.

pyroute2's package __init__ imports every one of its modules (NDB with its sqlite store, plan9,
wireguard, nl80211, ...) to export their names. The agent uses two classes, whose own modules do not
need that __init__: so the package is entered through a shell, an empty module for `pyroute2` that finds
the submodules where they are installed. The first time anything asks the shell for a name it does not
have (`from pyroute2 import NDB`, `pyroute2.IPRoute`), it runs the real __init__ in itself, once, so
other code importing pyroute2 still gets all of it. Measured: docs/design.md.
"""

from __future__ import annotations

import importlib.util
import sys


def _enter_package() -> None:
    if "pyroute2" in sys.modules:  # imported already, in full: nothing to save
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed as a package: the imports below fail as they would anyway
    loader = spec.loader
    shell = importlib.util.module_from_spec(spec)  # its __path__ set, its __init__ not run

    def whole_package(name: str) -> object:
        """PEP 562: called for a name the shell lacks. A submodule is imported (`from pyroute2 import config`,
        as pyroute2's own modules do, asks for it by name first); any other name runs the real __init__ in
        the shell, once (this hook is removed first: a name still missing is an AttributeError, not a loop)."""
        if name.startswith("__"):  # probes such as __wrapped__: not a reason to load everything
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")
        del shell.__dict__["__getattr__"]
        loader.exec_module(shell)
        return getattr(shell, name)

    shell.__dict__["__getattr__"] = whole_package
    sys.modules["pyroute2"] = shell


_enter_package()

from pyroute2.iproute import IPRoute  # noqa: E402
from pyroute2.ipvs import IPVS, IPVSService  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

__all__ = ["IPVS", "IPRoute", "IPVSService", "NetlinkError"]
