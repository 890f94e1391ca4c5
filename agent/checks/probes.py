"""The agent's own probes (`serve`): endpoints on this node that do not answer on their targetPort, a
cluster DNS Service that does not answer or does not resolve kubernetes.default, kubernetes.default not
answering by ClusterIP, and a loopback nameserver in the resolv.conf kubelet hands to CoreDNS.

Only what a probe positively saw: a probe that was not sent (not allowed, over the cap) says nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot
from agent.model.probes import (
    DNS,
    ENDPOINT,
    KUBERNETES,
    NOT_ALLOWED,
    OVER_LIMIT,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    ProbeSet,
)

NOT_SENT = (NOT_ALLOWED, OVER_LIMIT)
LOOPBACK_PREFIXES = ("127.",)


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.probes
    if not src.ok or src.data is None:
        return
    probes = src.data
    for r in probes.results:
        if r.ok or r.outcome in NOT_SENT:
            continue
        t = r.target
        ev = {"address": t.address, "port": t.port, "outcome": r.outcome, "error": r.error or "",
              "latency_seconds": round(r.latency_s, 6)}
        if t.kind == ENDPOINT:
            yield finding("probe.endpoint_not_answering", t.subject, service=t.subject,
                          evidence={**ev, "endpoint": f"{t.address}:{t.port}"})
        elif t.kind == KUBERNETES:
            yield finding("probe.kubernetes_unreachable", t.subject, evidence=ev)
        elif t.kind == DNS and r.outcome in (TIMEOUT, REFUSED, UNREACHABLE):
            yield finding("dns.server_unreachable", t.address, evidence={**ev, "server": t.address, "name": t.name})
        elif t.kind == DNS:
            yield finding("dns.name_unresolved", t.name, evidence={**ev, "server": t.address, "name": t.name})
    yield from resolv_conf_loop(probes)


def resolv_conf_loop(probes: ProbeSet) -> Iterator[Finding]:
    """A loopback nameserver in the file kubelet hands to dnsPolicy-Default pods: CoreDNS forwards to itself."""
    loops = [ns for ns in probes.nameservers if ns.startswith(LOOPBACK_PREFIXES) or ns == "::1"]
    if loops and probes.resolv_conf:
        yield finding("dns.resolv_conf_loop", probes.resolv_conf, evidence={
            "file": probes.resolv_conf, "nameserver": loops[0], "nameservers": probes.nameservers})
