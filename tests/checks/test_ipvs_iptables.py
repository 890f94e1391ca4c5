"""IPVS mode's `-m set` iptables rules (agent/checks/ipvs_iptables.py) on the reconstructed IPVS-mode dump in
tests/fixtures/kube-proxy/ipvs/: silent on it, one finding per deleted rule, nothing from a failed source."""

from __future__ import annotations

import dataclasses

import pytest

from agent.checks import ipvs_iptables
from agent.checks.ipvs_iptables_rules import RULES, set_name
from agent.collect.iptables_parse import parse_text
from agent.collect.ipvs import parse_ipset_save
from agent.model import KubeProxyHTTP, Snapshot, Source
from agent.model.iptables import IptablesState
from agent.model.ipvs import IpvsState
from tests.checks.helpers import run_checks
from tests.ipvs_mutations import FAULTS, IPVS, IpvsFault
from tests.snapshots import failed, healthy, kube_proxy_process

SAVED = (IPVS / "overall.legacy-save.rules").read_text()
IPSETS = parse_ipset_save((IPVS / "overall.ipset-save.txt").read_text().splitlines())
VIPS = sorted(m for m in IPSETS["KUBE-IPVS-IPS"])


def ipvs_snapshot(saved: str = SAVED, ipsets: dict[str, list[str]] | None = None, **replace: object) -> Snapshot:
    """kube-proxy v1.31 in IPVS mode with a working kernel (no virtual servers: this check does not read them)."""
    base = healthy()
    http = dataclasses.replace(base.kube_proxy_http.data, proxy_mode="ipvs") if base.kube_proxy_http.data else None
    assert isinstance(http, KubeProxyHTTP)
    sources: dict[str, object] = {
        "kube_proxy": Source("kube_proxy", ok=True,
                             data=kube_proxy_process("--hostname-override=test-node", "--proxy-mode=ipvs")),
        "kube_proxy_http": Source("kube_proxy_http", ok=True, data=http),
        "iptables": Source("iptables", ok=True, data=IptablesState(
            backend="legacy", backend_reason="test", rulesets=(parse_text(saved),))),
        "ipvs": Source("ipvs", ok=True, data=IpvsState(interface_present=True, interface_addresses=VIPS,
                                                       ipsets=dict(IPSETS if ipsets is None else ipsets))),
        **replace,
    }
    return healthy(**sources)


def ours(snap: Snapshot) -> set[tuple[str, str, str]]:
    return {(f.id, f.subject, f.severity) for f in ipvs_iptables.check(snap)}


def without(line: str, text: str = SAVED) -> str:
    lines = text.splitlines()
    assert line in lines, line
    return "\n".join(x for x in lines if x != line) + "\n"


def saved_form(fault: IpvsFault) -> str:
    """The fault's rule as iptables-save prints it (options reordered, defaults added)."""
    rule = fault.rule
    spec = rule.spec.replace('"', "").replace("--or-mark", "--set-xmark")  # as iptables-save prints it
    want = {tok for tok in spec.split() if not tok.startswith("0x")}
    hits = [x for x in SAVED.splitlines()
            if x.startswith(f"-A {rule.chain} ") and want <= set(x.replace('"', "").split())]
    table_lines = SAVED.split(f"*{rule.table}\n", 1)[1].split("COMMIT", 1)[0].splitlines()
    (hit,) = [x for x in hits if x in table_lines]
    return hit


def test_the_clean_dump_gives_no_finding_at_all() -> None:
    snap = ipvs_snapshot()
    assert ours(snap) == set()
    # nor from any other check on a node whose IPVS state is whole
    assert {f.id for f in run_checks(snap) if f.severity != "info"} == set()


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_each_deleted_rule_gives_its_finding(fault: IpvsFault) -> None:
    got = ours(ipvs_snapshot(without(saved_form(fault))))
    assert got == {(*fault.expect, fault.severity)}


def test_every_judged_rule_is_in_the_fixture_and_in_the_faults() -> None:
    """Each rule of RULES that kube-proxy writes for this fixture's sets has a fault (none judged untested)."""
    subjects = {f.expect[1] for f in FAULTS}
    written = {f"{r.table}/{r.chain}/{r.key}" for r in RULES
               if (not r.set or r.set in IPSETS) and (not r.written_if_members or IPSETS.get(r.written_if_members))}
    # the second external-IP-Local ACCEPT and the LoadBalancer ACCEPT behave as their tested twins
    assert written - subjects == {"nat/KUBE-SERVICES/KUBE-EXTERNAL-IP-LOCAL/local",
                                  "nat/KUBE-SERVICES/KUBE-LOAD-BALANCER/accept"}


def test_a_return_moved_below_the_reject_is_a_rejection() -> None:
    line = "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN"
    reject = next(x for x in SAVED.splitlines() if x.startswith("-A KUBE-IPVS-FILTER") and "-j REJECT" in x)
    moved = without(line).replace(reject, f"{reject}\n{line}")
    lines = moved.splitlines()
    assert lines.index(line) == lines.index(reject) + 1
    assert ours(ipvs_snapshot(moved)) == {("ipvs.service_ips_rejected", "filter/KUBE-IPVS-FILTER/KUBE-CLUSTER-IP",
                                           "critical")}


def test_an_altered_rule_counts_as_missing() -> None:
    line = "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN"
    altered = SAVED.replace(line, line.replace("dst,dst", "src,dst"))
    assert ours(ipvs_snapshot(altered)) == {("ipvs.service_ips_rejected", "filter/KUBE-IPVS-FILTER/KUBE-CLUSTER-IP",
                                             "critical")}


def test_a_rule_on_an_empty_set_is_not_expected_and_an_empty_served_set_is_info() -> None:
    no_loop = {k: ([] if k == "KUBE-LOOP-BACK" else v) for k, v in IPSETS.items()}
    hairpin = "-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving " \
              "hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE"
    assert ours(ipvs_snapshot(without(hairpin), no_loop)) == set()
    no_lb = {k: ([] if k == "KUBE-LOAD-BALANCER" else v) for k, v in IPSETS.items()}
    line = "-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN"
    assert ours(ipvs_snapshot(without(line), no_lb)) >= {
        ("ipvs.service_ips_rejected", "filter/KUBE-IPVS-FILTER/KUBE-LOAD-BALANCER", "info")}


FORWARD_ACCEPTS = [x for x in SAVED.splitlines() if x.startswith("-A KUBE-FORWARD ")]


@pytest.mark.parametrize("line", FORWARD_ACCEPTS, ids=["marked", "established"])
def test_forward_accepts_matter_only_under_a_drop_policy(line: str) -> None:
    """A control as in iptables mode: under the fixture's FORWARD policy ACCEPT their loss changes no packet."""
    assert ours(ipvs_snapshot(without(line))) == set()
    dropping = without(line).replace(":FORWARD ACCEPT", ":FORWARD DROP")
    assert ours(ipvs_snapshot(dropping)) == {("iptables.forward_accept_missing", "filter/FORWARD", "warning")}


def test_a_failed_ipset_read_is_a_failed_source_and_nothing_else() -> None:
    broken = IpvsState(interface_present=True, ipset_error="`ipset save` timed out after 5s")
    snap = ipvs_snapshot(without(saved_form(FAULTS[0])), ipvs=Source("ipvs", ok=True, data=broken))
    assert ours(snap) == {("agent.source_failed", "ipset", "warning")}


def test_a_failed_iptables_read_judges_nothing() -> None:
    assert ours(ipvs_snapshot(iptables=failed("iptables"))) == set()


def test_not_judged_outside_ipvs_mode() -> None:
    snap = ipvs_snapshot(without(saved_form(FAULTS[0])))
    iptables_mode = dataclasses.replace(snap, kube_proxy=Source("kube_proxy", ok=True, data=kube_proxy_process(
        "--hostname-override=test-node", "--proxy-mode=iptables")), kube_proxy_http=healthy().kube_proxy_http)
    assert ours(iptables_mode) == set()


def test_ipv6_set_names() -> None:
    assert set_name("KUBE-CLUSTER-IP", 6) == "KUBE-6-CLUSTER-IP"
    assert set_name("KUBE-NODE-PORT-LOCAL-SCTP-HASH", 6) == "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"  # 31 characters
    assert set_name("KUBE-CLUSTER-IP", 4) == "KUBE-CLUSTER-IP"


def without_chain(table: str, chain: str) -> str:
    section = SAVED.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
    kept = [x for x in section.splitlines() if not x.startswith((f"-A {chain} ", f":{chain} "))
            and not x.endswith(f"-j {chain}")]
    return SAVED.replace(section, "\n".join(kept) + "\n")


def test_an_absent_chain_is_one_chain_missing_not_a_finding_per_rule() -> None:
    assert ours(ipvs_snapshot(without_chain("nat", "KUBE-NODE-PORT"))) == {
        ("iptables.chain_missing", "nat/KUBE-NODE-PORT", "critical"),
        ("ipvs.iptables_rule_missing", "nat/KUBE-SERVICES/KUBE-NODE-PORT", "critical")}  # its jump, gone with it
    # without IPVS in the kernel the IPVS proxier cannot run: ipvs.kernel_unavailable says why, nothing here
    no_kernel = IpvsState(kernel_available=False, kernel_error="ip_vs is not loaded", ipsets=IPSETS)
    snap = ipvs_snapshot(without_chain("nat", "KUBE-NODE-PORT"), ipvs=Source("ipvs", ok=True, data=no_kernel))
    assert ours(snap) == {("ipvs.iptables_rule_missing", "nat/KUBE-SERVICES/KUBE-NODE-PORT", "critical")}


def test_a_chain_newer_than_the_kube_proxy_is_not_expected() -> None:
    assert ours(ipvs_snapshot(without_chain("filter", "KUBE-IPVS-FILTER"))) == set()


def test_ipv6_rules_match_on_the_kube_6_sets() -> None:
    """kube-proxy's IPv6 proxier writes the same rules on its KUBE-6-* sets (ip6tables): the fixture with its set
    names so renamed is silent as an IPv6 rule set, and loses its ClusterIP RETURN the same way."""
    renamed = {set_name(k, 6): v for k, v in IPSETS.items()}
    saved6 = SAVED
    for name in sorted(IPSETS, key=len, reverse=True):
        saved6 = saved6.replace(f"--match-set {name} ", f"--match-set {set_name(name, 6)} ")
    snap = ipvs_snapshot(ipsets=renamed)
    v6 = dataclasses.replace(snap.iptables.data, rulesets=(parse_text(saved6, family=6),))
    assert ours(dataclasses.replace(snap, iptables=Source("iptables", ok=True, data=v6))) == set()
    line = "-A KUBE-IPVS-FILTER -m set --match-set KUBE-6-CLUSTER-IP dst,dst -j RETURN"
    v6 = dataclasses.replace(snap.iptables.data, rulesets=(parse_text(without(line, saved6), family=6),))
    assert ours(dataclasses.replace(snap, iptables=Source("iptables", ok=True, data=v6))) == {
        ("ipvs.service_ips_rejected", "filter/KUBE-IPVS-FILTER/KUBE-6-CLUSTER-IP", "critical")}


@pytest.mark.parametrize("form", ["-m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ",  # masqueradeAll
                                  "-m set --match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"],  # no detector
                         ids=["masquerade_all", "no_local_detector"])
def test_every_form_of_the_cluster_ip_masquerade_is_kube_proxys(form: str) -> None:
    line = next(x for x in SAVED.splitlines() if "KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ" in x)
    assert ours(ipvs_snapshot(SAVED.replace(line, f"-A KUBE-SERVICES {form}"))) == set()
