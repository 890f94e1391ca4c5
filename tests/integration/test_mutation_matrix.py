"""The mutation matrix: every kind of fault in kube-proxy's rules, applied to every golden dump it fits, on
both iptables backends, must give its finding attributed to the right Service; controls must stay silent.

Faults are generated from the dumps (tests/mutations.py) and applied with the `iptables` commands a
person or a tool would use, on a node loaded in a private network namespace; the check runs with the
dump's own cluster state and `--grace 0`. Cases are independent, so xdist spreads them over the workers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_rules_iptables import FULL, IPT, check_with, load
from tests.mutations import HOOK, Fault, faults, reordered_dispatch
from tests.testbed import Node, problems

BACKENDS = ("legacy", "nft")
CASES = [(fixture, fault) for fixture in FULL for fault in [*faults((IPT / f"{fixture}.rules").read_text()), HOOK]]


def apply(node: Node, backend: str, commands: tuple[tuple[str, ...], ...]) -> None:
    for argv in commands:
        node.sh(f"iptables-{backend}", "-w", "60", *argv)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("fixture", "fault"), CASES, ids=[f"{f}-{x}" for f, x in CASES])
def test_fault_gives_its_finding_for_its_service(node: Node, tmp_path: Path, fixture: str, fault: Fault,
                                                 backend: str) -> None:
    load(node, fixture, backend)
    apply(node, backend, fault.commands)
    found = problems(check_with(node, fixture, tmp_path, grace="0"))
    assert fault.expect in found, f"{fault.kind}: {found}"
    subject = fault.expect[1]
    # Attribution: every finding names the Service the fault hit (or, for a node-wide fault, the node's chains).
    assert {s for _, s in found} == {subject}, f"{fault.kind} also blamed: {found}"


def test_every_kind_appears_in_the_matrix() -> None:
    kinds = {fault.kind for _, fault in CASES}
    assert kinds >= {"sep_dnat_deleted", "dnat_port_changed", "cluster_ip_dispatch_deleted", "ladder_rung_deleted",
                     "service_chain_flushed", "reject_deleted", "nodeport_deleted", "hook_deleted"}


CONTROLS = [f for f in FULL if reordered_dispatch((IPT / f"{f}.rules").read_text())]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fixture", CONTROLS)
def test_reordered_dispatch_is_silent(node: Node, tmp_path: Path, fixture: str, backend: str) -> None:
    load(node, fixture, backend)
    commands = reordered_dispatch((IPT / f"{fixture}.rules").read_text())
    assert commands is not None
    apply(node, backend, commands)
    assert problems(check_with(node, fixture, tmp_path, grace="0")) == set()
