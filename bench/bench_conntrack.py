"""The conntrack table read at scale: svcdoctor's streaming ctnetlink read of stale-flow candidates next to
the bare `conntrack -L -p udp`, on a private netns filled with N UDP entries.

    .venv/bin/python bench/bench_conntrack.py                       # 100k and 1M entries
    .venv/bin/python bench/bench_conntrack.py --sizes 100000 --runs 3

The table: 90% of the entries go to the DNS ClusterIP 10.96.0.10:53, DNATed to one of its 10 endpoints
(1% of them to an endpoint that is gone), 10% to addresses outside the cluster: the worst case for the
reader, since nearly every entry is a Service flow it must group. Entries are created by a small netlink
batch writer (IPCTNL_MSG_CT_NEW, thousands per sendmsg; `conntrack -I` forks once per entry and takes
hours at 1M). It gives the reply tuple directly instead of asking the kernel to NAT, so the entries look
to a reader as `conntrack -I --dst-nat` ones do, without the NAT status bits (the reader never uses them).

nf_conntrack_max is global and read-only inside a netns: when it is below the size asked for, this raises
it for the run and puts the old value back (the only host setting the bench touches; the agent never
writes). Columns: the bare tool's time and peak RSS (output discarded), svcdoctor's read (the collector's
`read_flows`, streaming and grouping) with its own peak RSS over the read (VmHWM, reset before) and the RSS
before the read (the interpreter and the agent's imports), and the check over the groups. Best of --runs.
Needs root (netns).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_SYSCTL = Path("/proc/sys/net/netfilter/nf_conntrack_max")
ENDPOINTS = [f"10.244.{i}.{i + 10}" for i in range(10)]
GONE = "10.244.99.99"
DNS_IP = "10.96.0.10"
BATCH = 1000


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _tuple(kind: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    ip = _attr(0x8000 | 1, _attr(1, src) + _attr(2, dst))
    ports = _attr(2, struct.pack(">H", sport)) + _attr(3, struct.pack(">H", dport))
    proto = _attr(0x8000 | 2, _attr(1, bytes([17])) + ports)
    return _attr(0x8000 | kind, ip + proto)


def _new_entry(seq: int, src: bytes, dst: bytes, sport: int, dport: int, reply_src: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + _tuple(1, src, dst, sport, dport) \
        + _tuple(2, reply_src, src, dport, sport) + _attr(7, struct.pack(">I", 3600))  # CTA_TIMEOUT
    # IPCTNL_MSG_CT_NEW, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL; errors come back as NLMSG_ERROR
    return struct.pack("=IHHII", 16 + len(body), (1 << 8) | 0, 0x1 | 0x400 | 0x200, seq, 0) + body


def fill(n: int) -> None:
    """Runs inside the netns: create n entries with batched netlink messages."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root): room for error replies
    sock.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE: a batch is one sendmsg
    dns, other = socket.inet_aton(DNS_IP), [socket.inet_aton(f"198.51.100.{i}") for i in range(1, 11)]
    eps, gone = [socket.inet_aton(ip) for ip in ENDPOINTS], socket.inet_aton(GONE)
    errors = 0
    batch: list[bytes] = []
    for i in range(n):
        src = struct.pack(">I", (10 << 24) | (1 << 16) | (i // 60000))  # 10.1.x.y: 60000 ports per client
        sport = 1024 + i % 60000
        if i % 10 == 9:
            batch.append(_new_entry(i, src, other[i % 10], sport, 53, other[i % 10]))
        else:
            batch.append(_new_entry(i, src, dns, sport, 53, gone if i % 100 == 0 else eps[i % 10]))
        if len(batch) == BATCH or i == n - 1:
            sock.send(b"".join(batch))
            batch.clear()
            sock.setblocking(False)
            try:
                while True:
                    data = sock.recv(1 << 16)
                    off = 0
                    while off + 20 <= len(data):
                        length, kind = struct.unpack_from("=IH", data, off)
                        if kind == 2 and struct.unpack_from("=i", data, off + 16)[0] != 0:
                            errors += 1
                        off += (length + 3) & ~3
            except BlockingIOError:
                pass
            sock.setblocking(True)
    print(json.dumps({"errors": errors}))


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def read() -> None:
    """Runs inside the netns: svcdoctor's read and check, timed, with peak RSS; prints one JSON line."""
    from agent.checks import conntrack_flows
    from agent.collect.conntrack_flows import Watch, read_flows
    from agent.model import Snapshot, Source
    from agent.model.cluster import ClusterState, EndpointSpec, ServicePortSpec, ServiceSpec, SlicePort, SliceSpec

    state = ClusterState(origin="bench", fetched_at=0, services=[ServiceSpec(
        "kube-system", "kube-dns", "ClusterIP", [DNS_IP], [ServicePortSpec("dns", "UDP", 53)])], slices=[SliceSpec(
            "kube-system", "kube-dns-x", "kube-dns", "IPv4", [SlicePort("dns", 53, "UDP")],
            [EndpointSpec(ip) for ip in ENDPOINTS])])
    before = _vm("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: count only what follows
    t0 = time.monotonic()
    flows = read_flows(Watch(state), time.monotonic() + 600)
    t1 = time.monotonic()
    peak = _vm("VmHWM")
    snap = Snapshot(node="n", taken_at=flows.read_at, agent_version="bench", kube_proxy=Source("kube_proxy"),
                    kubelet=Source("kubelet"), kube_proxy_http=Source("kube_proxy_http"), conntrack=Source("conntrack"),
                    sysctl=Source("sysctl"), links=Source("links"), cluster=Source("cluster", ok=True, data=state),
                    conntrack_flows=Source("conntrack_flows", ok=True, data=flows))
    found = list(conntrack_flows.check(snap))
    t2 = time.monotonic()
    print(json.dumps({"read_s": t1 - t0, "check_s": t2 - t1, "rss_before_mib": before, "rss_peak_mib": peak,
                      "entries": flows.entries_read, "groups": len(flows.groups),
                      "stale": sum(f.evidence["entries"] for f in found)}))


def _in_ns(ns: str, *args: str) -> dict[str, float]:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, *args], check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def bare(ns: str) -> tuple[float, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "conntrack", "-L", "-p", "udp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("conntrack -L failed")
    return time.monotonic() - t0, usage.ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--worker", choices=["fill", "read"])
    p.add_argument("--n", type=int, default=0)
    a = p.parse_args()
    if a.worker == "fill":
        return fill(a.n)
    if a.worker == "read":
        return read()
    old_max = int(MAX_SYSCTL.read_text())
    rows = []
    try:
        if max(a.sizes) > old_max:
            MAX_SYSCTL.write_text(str(max(a.sizes) + 10_000))
        for n in a.sizes:
            ns = f"svcd-{secrets.token_hex(4)}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            try:
                t0 = time.monotonic()
                errors = _in_ns(ns, "--worker", "fill", "--n", str(n))["errors"]
                fill_s = time.monotonic() - t0
                count = int(subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-C"], capture_output=True,
                                           text=True, check=True).stdout)
                bare_runs = [bare(ns) for _ in range(a.runs)]
                ours = [_in_ns(ns, "--worker", "read") for _ in range(a.runs)]
                best = min(ours, key=lambda r: r["read_s"])
                bare_s = min(t for t, _ in bare_runs)
                rows.append({"entries": count, "fill_s": fill_s, "fill_errors": errors, "bare_s": bare_s,
                             "bare_rss_mib": max(r for _, r in bare_runs), **best,
                             "ratio": best["read_s"] / bare_s})
                print(json.dumps(rows[-1]), flush=True)
            finally:
                subprocess.run(["ip", "netns", "del", ns], check=False)
    finally:
        if int(MAX_SYSCTL.read_text()) != old_max:
            MAX_SYSCTL.write_text(str(old_max))
    print("\n| entries | `conntrack -L -p udp` (s) | its peak RSS (MiB) | svcdoctor read (s) | ratio | "
          "RSS before read (MiB) | peak RSS during read (MiB) | groups | check (s) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['entries']} | {r['bare_s']:.2f} | {r['bare_rss_mib']:.1f} | {r['read_s']:.2f} | "
              f"{r['ratio']:.2f}x | {r['rss_before_mib']:.1f} | {r['rss_peak_mib']:.1f} | {r['groups']:.0f} | "
              f"{r['check_s']:.3f} |")


if __name__ == "__main__":
    main()
