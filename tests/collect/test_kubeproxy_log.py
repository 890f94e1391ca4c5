"""kube-proxy's log: CRI files under a host root, read incrementally across rotation and truncation, matched
on kube-proxy's real messages into findings; journald through a stand-in `journalctl`."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checks import kube_proxy_log
from agent.collect.base import Absent, CollectContext
from agent.collect.kubeproxy_log import KubeProxyLogReader, Matcher, cri_records, message_of
from agent.config import Config
from agent.model import Source
from agent.model.kube_proxy_signals import KubeProxyLog
from tests.snapshots import healthy

POD = "var/log/pods/kube-system_kube-proxy-x7k2p_0d6c8a5e-1111-4222-8333-944445555666/kube-proxy"

# kube-proxy's own messages (pkg/proxy/iptables/proxier.go, nftables/proxier.go, conntrack/cleanup.go,
# cmd/kube-proxy/app/server.go, client-go's reflector), as klog writes them
RESTORE = ['E0627 09:28:54.054930       1 proxier.go:1598] "Failed to execute iptables-restore" err=<',
           "\texit status 1: iptables-restore: line 86 failed", " >"]
RESTORE_OLD = ("E0627 09:28:54.054930       1 proxier.go:1598] Failed to execute iptables-restore: exit status 1 "
               "(iptables-restore: line 7 failed)")
SYNC_FAILED = 'I0627 09:28:54.054962       1 proxier.go:879] "Sync failed" ipFamily="IPv4" retryingTime="30s"'
LOCK = ('E0501 10:00:00.000001       1 proxier.go:1521] "Failed to execute iptables-restore" err="exit status 4: '
        'Another app is currently holding the xtables lock. Stopped waiting after 5s."')
NFT = 'E0501 10:00:00.000001       1 proxier.go:1726] "nftables sync failed" err="signal: segmentation fault"'
UNAUTHORIZED = ('E1101 07:45:11.124136       1 reflector.go:158] "Unhandled Error" err="k8s.io/client-go/informers/'
                'factory.go:160: Failed to watch *v1.EndpointSlice: failed to list *v1.EndpointSlice: Unauthorized"')
REFUSED = ('E1101 07:45:11.124136       1 reflector.go:140] k8s.io/client-go/informers/factory.go:150: Failed to '
           'watch *v1.Service: failed to list *v1.Service: Get "https://10.0.0.1:6443/api/v1/services": dial tcp '
           '10.0.0.1:6443: connect: connection refused')
CONNTRACK = ('E0501 10:00:00.000001       1 proxier.go:830] "Failed to delete stale service connections" err="error '
             'deleting connection tracking state for UDP service IP: 10.96.0.10, error: conntrack command returned: '
             '\'conntrack v1.4.4: Operation failed\'" servicePortName="kube-system/kube-dns:dns"')
IPVS = ('E0501 10:00:00.000001       1 server_linux.go:220] "Can\'t use the IPVS proxier" err="IPVS proxier will '
        'not be used because the following required kernel modules are not loaded: [ip_vs_rr]"')
NODE_IP = ('I1101 07:45:11.124136       1 server.go:843] "Can\'t determine this node\'s IP, assuming 127.0.0.1; if '
           'this is incorrect, please set the --bind-address flag"')
HEALTHY = ['I0501 10:00:00.000001       1 server_linux.go:66] "Using iptables proxy"',
           'I0501 10:00:00.000001       1 config.go:199] "Starting service config controller"',
           'I0501 10:00:00.000001       1 proxier.go:805] "SyncProxyRules complete" elapsed="12.3ms"']


def cri(*messages: str, at: float | None = None, stream: str = "stderr") -> str:
    stamp = datetime.fromtimestamp(at if at is not None else time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return "".join(f"{stamp} {stream} F {m}\n" for m in messages)


def host(tmp_path: Path) -> tuple[Config, Path]:
    d = tmp_path / POD
    d.mkdir(parents=True)
    return Config(root=tmp_path, proc=tmp_path / "proc"), d


def causes(log: KubeProxyLog) -> dict[str, int]:
    return {c.cause: c.count for c in log.causes}


def findings(log: KubeProxyLog) -> set[str]:
    return {f.id for f in kube_proxy_log.check(healthy(kube_proxy_log=Source("kube_proxy_log", ok=True, data=log)))}


def test_each_real_message_names_its_cause() -> None:
    m = Matcher()
    for line in [*RESTORE, SYNC_FAILED, LOCK, NFT, UNAUTHORIZED, REFUSED, CONNTRACK, IPVS, NODE_IP, *HEALTHY]:
        m.feed(line)
    assert {c: v.count for c, v in m.causes.items()} == {
        "iptables_restore_failed": 1, "sync_failed": 1, "xtables_lock_timeout": 1, "nftables_failed": 1,
        "api_unauthorized": 1, "api_unreachable": 1, "conntrack_cleanup_failed": 1, "ipvs_unusable": 1,
        "node_ip_unknown": 1}
    assert m.causes["iptables_restore_failed"].detail == "line 86 failed"
    assert m.causes["conntrack_cleanup_failed"].services == ["kube-system/kube-dns:dns"]
    old = Matcher()
    old.feed(RESTORE_OLD)
    assert old.causes["iptables_restore_failed"].detail == "line 7 failed"


def test_evidence_is_the_message_only_and_bounded() -> None:
    assert message_of(SYNC_FAILED) == '"Sync failed" ipFamily="IPv4" retryingTime="30s"'
    long = message_of("E0501 10:00:00.000001       1 x.go:1] " + "a\x1b" * 500)
    assert len(long) == 300 and "\x1b" not in long and long.endswith("...")


def test_first_read_takes_the_recent_tail_then_only_new_lines(tmp_path: Path) -> None:
    cfg, d = host(tmp_path)
    (d / "0.log").write_text(cri(*RESTORE, at=time.time() - 3600) + cri(*HEALTHY, SYNC_FAILED))
    reader = KubeProxyLogReader()
    first = reader(CollectContext(cfg, 5))
    assert first.first_read and causes(first) == {"sync_failed": 1}  # the hour-old failure is outside the window
    assert findings(first) == {"kube_proxy_log.sync_failed"}
    again = reader(CollectContext(cfg, 5))
    assert not again.first_read and causes(again) == {} and again.bytes_read == 0
    with (d / "0.log").open("a") as fh:
        fh.write(cri(*RESTORE, SYNC_FAILED))
    third = reader(CollectContext(cfg, 5))
    assert causes(third) == {"iptables_restore_failed": 1, "sync_failed": 1}
    # "Sync failed" adds nothing beside its named cause; the line is the evidence
    (f,) = [f for f in kube_proxy_log.check(healthy(kube_proxy_log=Source("kube_proxy_log", ok=True, data=third)))]
    assert f.id == "kube_proxy_log.iptables_restore_failed" and f.evidence["detail"] == "line 86 failed"
    assert f.evidence["line"] == '"Failed to execute iptables-restore" err=<'


def test_rotation_finishes_the_renamed_file_and_reads_the_new_one(tmp_path: Path) -> None:
    cfg, d = host(tmp_path)
    (d / "0.log").write_text(cri(*HEALTHY))
    reader = KubeProxyLogReader()
    reader(CollectContext(cfg, 5))
    with (d / "0.log").open("a") as fh:  # written just before kubelet rotates
        fh.write(cri(LOCK))
    os.rename(d / "0.log", d / "0.log.20260501-100000")
    (d / "0.log").write_text(cri(NFT))
    (d / "0.log.20260501-090000.gz").write_bytes(b"\x1f\x8b not read")
    got = reader(CollectContext(cfg, 5))
    assert causes(got) == {"xtables_lock_timeout": 1, "nftables_failed": 1}
    assert sorted(Path(f).name for f in got.files) == ["0.log", "0.log.20260501-100000"]
    assert causes(reader(CollectContext(cfg, 5))) == {}


def test_truncation_starts_over_and_an_unfinished_line_waits(tmp_path: Path) -> None:
    cfg, d = host(tmp_path)
    (d / "0.log").write_text(cri(*HEALTHY, *HEALTHY))
    reader = KubeProxyLogReader()
    reader(CollectContext(cfg, 5))
    (d / "0.log").write_text(cri(IPVS))  # copytruncate: same inode, smaller
    assert causes(reader(CollectContext(cfg, 5))) == {"ipvs_unusable": 1}
    line = cri(NODE_IP)
    with (d / "0.log").open("a") as fh:
        fh.write(line[:40])
    assert causes(reader(CollectContext(cfg, 5))) == {}
    with (d / "0.log").open("a") as fh:
        fh.write(line[40:])
    assert causes(reader(CollectContext(cfg, 5))) == {"node_ip_unknown": 1}


def test_partial_cri_lines_are_joined() -> None:
    recs = list(cri_records(iter(["2026-05-01T10:00:00.1Z stderr P E0501 10:00:00.000001 1 x.go:1] \"nftables",
                                  "2026-05-01T10:00:00.2Z stderr F  sync failed\" err=\"x\""])))
    assert len(recs) == 1 and "nftables sync failed" in recs[0][1]


def test_a_read_is_bounded_and_says_what_it_skipped(tmp_path: Path) -> None:
    cfg, d = host(tmp_path)
    (d / "0.log").write_text(cri(*HEALTHY))
    reader = KubeProxyLogReader(max_read_bytes=4096)
    reader(CollectContext(cfg, 5))
    with (d / "0.log").open("a") as fh:
        fh.write(cri(UNAUTHORIZED) + cri(*HEALTHY) * 100 + cri(REFUSED))
    got = reader(CollectContext(cfg, 5))
    assert got.skipped_bytes > 0 and got.bytes_read <= 4096
    assert causes(got) == {"api_unreachable": 1}  # the newest lines are the ones kept


def test_healthy_log_gives_no_finding(tmp_path: Path) -> None:
    cfg, d = host(tmp_path)
    (d / "0.log").write_text(cri(*HEALTHY * 20))
    reader = KubeProxyLogReader()
    assert findings(reader(CollectContext(cfg, 5))) == set()
    with (d / "0.log").open("a") as fh:
        fh.write(cri(*HEALTHY))
    assert findings(reader(CollectContext(cfg, 5))) == set()


def test_journald_through_a_stand_in_journalctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for journald (not running here): prints what `journalctl -o cat --show-cursor` prints,
    and records the arguments, so the reader's cursor handling is what is tested."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    args = tmp_path / "args"
    script = bindir / "journalctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {args}\ncase "$*" in *after-cursor=s=1*) '
                      f"printf '%s\\n' '{NFT}' '-- cursor: s=2';; "
                      f"*) printf '%s\\n' '{HEALTHY[0]}' '-- cursor: s=1';; esac\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    reader = KubeProxyLogReader()
    cfg = Config(root=Path("/"), proc=tmp_path)
    monkeypatch.setattr("agent.collect.kubeproxy_log._log_files", lambda root: [])
    monkeypatch.setattr("agent.collect.kubeproxy_log._has_journal_files", lambda d: True)
    first = reader(CollectContext(cfg, 5))
    assert first.origin == "journald unit kube-proxy" and causes(first) == {}
    second = reader(CollectContext(cfg, 5))
    assert causes(second) == {"nftables_failed": 1}
    calls = args.read_text().splitlines()
    assert "--since -600s" in calls[0] and "--after-cursor=s=1" in calls[1]


def test_no_pod_log_and_no_journal_is_absent(tmp_path: Path) -> None:
    cfg = Config(root=tmp_path, proc=tmp_path / "proc")
    with pytest.raises(Absent, match="no journal files"):
        KubeProxyLogReader()(CollectContext(cfg, 5))


def test_a_journal_without_kube_proxy_entries_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for journald's exit: `journalctl --show-cursor` exits 1 silently when nothing matched."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "journalctl").write_text("#!/bin/sh\nexit 1\n")
    (bindir / "journalctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    (tmp_path / "var/log/journal/0123abcd").mkdir(parents=True)
    (tmp_path / "var/log/journal/0123abcd/system.journal").write_bytes(b"LPKSHHRH")
    with pytest.raises(Absent, match="no recent journal entries"):
        KubeProxyLogReader()(CollectContext(Config(root=tmp_path, proc=tmp_path / "proc"), 5))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=20))
def test_fuzz_records_and_matcher_never_raise(lines: list[str]) -> None:
    m = Matcher(not_before=0)
    for stamp, text in cri_records(iter(lines)):
        m.feed(text, stamp)
    assert all(len(c.last_line) <= 300 for c in m.causes.values())
