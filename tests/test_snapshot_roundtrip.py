from __future__ import annotations

from agent.model import Snapshot
from agent.serial import to_jsonable
from tests.checks.helpers import run_checks
from tests.snapshots import failed, healthy


def test_snapshot_round_trips_through_json() -> None:
    snap = healthy(conntrack=failed("conntrack", "denied"))
    again = Snapshot.from_json(snap.to_json())
    assert to_jsonable(again) == to_jsonable(snap)
    assert type(again.kube_proxy.data).__name__ == "ProcessInfo"


def test_replayed_snapshot_gives_the_same_findings() -> None:
    snap = healthy(conntrack=failed("conntrack", "denied"))
    assert run_checks(Snapshot.from_json(snap.to_json())) == run_checks(snap)


def test_snapshot_without_later_areas_still_loads() -> None:
    import json

    raw = json.loads(healthy().to_json())
    for area in ("iptables", "nftables", "ipvs", "cni", "cluster"):
        raw.pop(area, None)
    snap = Snapshot.from_json(json.dumps(raw))
    assert snap.iptables.absent and snap.iptables.ok
