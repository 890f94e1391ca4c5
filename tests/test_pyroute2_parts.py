"""agent/pyroute2_parts.py: the agent imports pyroute2's IPRoute and IPVS without the package __init__ that
imports all of pyroute2, and whoever asks pyroute2 for more still gets all of it. Each case runs in a
fresh interpreter: in this test process pyroute2 may have been imported in full already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# modules only pyroute2's package __init__ imports (NDB and its sqlite store, plan9, nl80211)
ONLY_IN_FULL = ("pyroute2.ndb.main", "sqlite3", "pyroute2.plan9.client", "pyroute2.netlink.nl80211")


def _run(code: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_the_agent_and_a_link_dump_load_none_of_the_rest_of_pyroute2() -> None:
    out = _run(f"""
import json, sys
import agent.runner, agent.serve, agent.cli  # every module of the agent
from agent.collect import ipvs
from agent.pyroute2_parts import IPRoute
with IPRoute() as ipr:
    names = [str(m.get("IFLA_IFNAME")) for m in ipr.link("dump")]
try:
    ipvs.read_virtual_servers()  # the IPVS family: absent here, or there; either way its code ran
except Exception as exc:
    pass
print(json.dumps({{"names": names, "loaded": [m for m in {ONLY_IN_FULL!r} if m in sys.modules]}}))
""")
    assert "lo" in out["names"]  # rtnetlink answered through the parts
    assert out["loaded"] == []


def test_asking_pyroute2_for_more_runs_its_whole_init_once() -> None:
    out = _run("""
import json, sys
from agent.pyroute2_parts import IPRoute
import pyroute2
from pyroute2 import NDB  # a name only the package __init__ provides
try:
    pyroute2.no_such_name
    missing = False
except AttributeError:
    missing = True
print(json.dumps({"same": pyroute2.IPRoute is IPRoute, "ndb": NDB.__name__, "missing": missing,
                  "version": str(pyroute2.__version__), "full": "pyroute2.ndb.main" in sys.modules}))
""")
    assert out == {"same": True, "ndb": "NDB", "missing": True, "version": out["version"], "full": True}
    assert out["version"] != "unknown"


def test_pyroute2_imported_before_the_agent_is_used_as_it_is() -> None:
    out = _run("""
import json, sys
import pyroute2
from agent.pyroute2_parts import IPRoute, IPVS
print(json.dumps({"same": pyroute2.IPRoute is IPRoute and pyroute2.IPVS is IPVS,
                  "hook": "__getattr__" in vars(pyroute2)}))
""")
    assert out == {"same": True, "hook": False}
