"""kube-proxy's failure signals: the bounded exposition parser, the reader's rises between reads, and the
findings they give. The expositions are the stand-in's, which writes each version's real names and labels."""

from __future__ import annotations

import argparse
import importlib.util
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checks import kube_proxy, kube_proxy_metrics
from agent.collect.kubeproxy_metrics import FAILURES, PROGRAMMING, MetricsReader, parse
from agent.model import KubeProxyHTTP, Snapshot, Source
from tests.snapshots import NOW, healthy
from tests.testbed import STANDINS

PARTIAL = "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total"
RESTORE, _, NFT = FAILURES


def _standin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kube_proxy_http_standin", STANDINS / "kube_proxy_http.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


STANDIN = _standin()


def exposition(scrape: int, version: str = "v1.31.2", mode: str = "iptables", **kw: object) -> str:
    args = argparse.Namespace(version=version, mode=mode, dual_stack=False, failures_per_scrape=0,
                              partial_failures_per_scrape=0, pending=0, no_local_internal=0,
                              programming_seconds=0.5)
    vars(args).update(kw)
    return "\n".join(STANDIN.signal_lines(args, scrape, NOW - 5, NOW - 6)) + "\n"


def _snap(body_reads: list[str], **kw: object) -> Snapshot:
    reader = MetricsReader()
    sig = None
    for i, body in enumerate(body_reads):
        sig = reader.read(body, NOW - 30 * (len(body_reads) - 1 - i))
    http = KubeProxyHTTP(healthz_status=200, proxy_mode="iptables", version="v1.31.2", signals=sig,
                         metrics={"kubeproxy_sync_proxy_rules_last_timestamp_seconds": NOW - 5,
                                  "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds": NOW - 6})
    return healthy(kube_proxy_http=Source("kube_proxy_http", ok=True, data=http), **kw)


def _found(snap: Snapshot) -> set[tuple[str, str]]:
    return {(f.id, str(f.evidence.get("metric", f.evidence.get("traffic_policy", "")))) for f in
            [*kube_proxy_metrics.check(snap), *kube_proxy.check(snap)]}


@pytest.mark.parametrize(("version", "mode", "counter"), [
    ("v1.26.3", "iptables", RESTORE), ("v1.31.2", "iptables", RESTORE), ("v1.31.2", "nftables", NFT),
    ("v1.33.1", "iptables", RESTORE), ("v1.34.0", "nftables", NFT)])
def test_a_rising_failure_counter_is_a_finding_in_every_format(version: str, mode: str, counter: str) -> None:
    reads = [exposition(n, version, mode, failures_per_scrape=2) for n in (1, 2)]
    snap = _snap(reads)
    assert _found(snap) == {("kube_proxy.sync_failures", counter)}
    (f,) = kube_proxy_metrics.check(snap)
    assert f.evidence["rose_by"] == 2 and f.evidence["over_seconds"] == 30
    assert f.evidence["ip_family"] == ("IPv4" if version >= "v1.33" else "not labelled (kube-proxy < 1.33)")


@pytest.mark.parametrize("version", ["v1.26.3", "v1.31.2", "v1.33.1"])
def test_healthy_kube_proxy_gives_nothing_across_reads(version: str) -> None:
    snap = _snap([exposition(n, version) for n in (1, 2, 3)])
    assert _found(snap) == set()


def test_first_read_knows_no_rise_even_with_failures_on_the_counter() -> None:
    snap = _snap([exposition(5, failures_per_scrape=3)])
    sig = snap.kube_proxy_http.data.signals  # type: ignore[union-attr]
    assert sig is not None and [c.value for c in sig.failures if c.metric == RESTORE] == [15]
    assert _found(snap) == set()


def test_counter_going_down_is_a_restart_not_a_rise() -> None:
    assert _found(_snap([exposition(9, failures_per_scrape=1), exposition(1, failures_per_scrape=1)])) == set()


def test_partial_restore_failures_are_a_warning() -> None:
    (f,) = kube_proxy_metrics.check(_snap([exposition(n, partial_failures_per_scrape=1) for n in (1, 2)]))
    assert (f.id, f.severity, f.evidence["metric"]) == ("kube_proxy.sync_failures", "warning", PARTIAL)


def test_dual_stack_labels_give_one_sync_pair_per_family() -> None:
    sig = _snap([exposition(1, "v1.33.1", dual_stack=True)]).kube_proxy_http.data.signals  # type: ignore[union-attr]
    assert sig is not None and [s.ip_family for s in sig.sync] == ["IPv4", "IPv6"]
    assert {(c.metric, c.ip_family) for c in sig.failures} == {(RESTORE, "IPv4"), (RESTORE, "IPv6"),
                                                               (PARTIAL, "IPv4"), (PARTIAL, "IPv6")}


def test_what_a_version_does_not_export_is_named() -> None:
    sig = _snap([exposition(1, "v1.26.3")]).kube_proxy_http.data.signals  # type: ignore[union-attr]
    assert sig is not None and set(sig.not_found) == {PARTIAL, NFT}


def test_hung_sync_per_family_carries_pending_changes() -> None:
    reader = MetricsReader()
    args = dict(version="v1.33.1", dual_stack=True, pending=7)
    reader.read(exposition(1, **args), NOW - 120)  # type: ignore[arg-type]
    body = exposition(2, **args).replace(f"last_timestamp_seconds{{ip_family=\"IPv6\"}} {NOW - 5:.9e}",  # type: ignore[arg-type]
                                         f"last_timestamp_seconds{{ip_family=\"IPv6\"}} {NOW - 600:.9e}")
    sig = reader.read(body, NOW)
    snap = healthy(kube_proxy_http=Source("kube_proxy_http", ok=True, data=KubeProxyHTTP(
        healthz_status=200, version="v1.33.1", signals=sig)))
    (f,) = kube_proxy.check(snap)
    assert (f.id, f.evidence["ip_family"]) == ("kube_proxy.sync_stale", "IPv6")
    assert f.evidence["endpoint_changes_pending"] == 7 and f.evidence["endpoint_changes_pending_for_seconds"] == 120


def test_slow_network_programming_is_a_finding() -> None:
    snap = _snap([exposition(n, programming_seconds=90) for n in (1, 2)])
    assert _found(snap) == {("kube_proxy.network_programming_slow", "")}
    assert _found(_snap([exposition(n, programming_seconds=2) for n in (1, 2)])) == set()


def test_internal_local_policy_without_local_endpoints_is_a_warning() -> None:
    (f,) = kube_proxy_metrics.check(_snap([exposition(1, no_local_internal=2)]))
    assert (f.id, f.severity, f.evidence["services"]) == ("kube_proxy.no_local_endpoints", "warning", 2)


# the parser -------------------------------------------------------------------------------------------

def test_parser_reads_labels_with_escapes_and_skips_other_names() -> None:
    text = ('# HELP x\nother_metric{a="}"} 1\n'
            f'{RESTORE}{{ip_family="IPv4",note="a\\"b\\\\c"}} 3 1700000000000\n{PROGRAMMING}_count 4\n')
    got = parse(text)
    assert got == {RESTORE: [({"ip_family": "IPv4", "note": 'a"b\\c'}, 3.0)], PROGRAMMING + "_count": [({}, 4.0)]}


@pytest.mark.parametrize("line", [f"{RESTORE} abc", f"{RESTORE}{{ip_family=IPv4}} 1", f"{RESTORE}",
                                  f'{RESTORE}{{ip_family="IPv4" 1', f"{RESTORE} 1_0", f"{RESTORE} 1 2 3"])
def test_parser_rejects_a_malformed_wanted_line(line: str) -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse(line + "\n")


def test_parser_bounds_lines_and_series() -> None:
    with pytest.raises(ValueError, match="more than 10 lines"):
        parse("x 1\n" * 20, max_lines=10)
    with pytest.raises(ValueError, match="more than 3 series"):
        parse(f"{RESTORE} 1\n" * 4, max_series=3)
    with pytest.raises(ValueError, match="longer than"):
        parse(f'{RESTORE}{{a="{"x" * 100}"}} 1\n', max_line=50)


def test_a_failed_read_keeps_the_previous_baseline() -> None:
    reader = MetricsReader()
    reader.read(exposition(1, failures_per_scrape=1), NOW - 60)
    with pytest.raises(ValueError):
        reader.read(f"{RESTORE} nope\n", NOW - 30)
    sig = reader.read(exposition(3, failures_per_scrape=1), NOW)
    assert [(c.delta, sig.previous_read_at) for c in sig.failures if c.metric == RESTORE] == [(2, NOW - 60)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('kubeproxy_sync_rules{}="\\,. 0123456789e+-#\nIPv4Infa')), max_size=400))
def test_parser_fuzz_only_value_errors(text: str) -> None:
    for body in (text, f"{RESTORE}{text}", f"{PROGRAMMING}_bucket{{le={text}"):
        try:
            parse(body)
            MetricsReader().read(body, NOW)
        except ValueError:
            pass
