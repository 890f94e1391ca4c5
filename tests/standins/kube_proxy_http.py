"""Stand-in for kube-proxy's HTTP endpoints, in kube-proxy's exact formats.

/healthz on the healthz port: `{"lastUpdated": ..., "currentTime": ..., "nodeEligible": ...}` with
200 or 503 (pkg/proxy/healthcheck/proxier_health.go); /proxyMode and /metrics on the metrics port
(plain-text mode; Prometheus text with kube-proxy's sync timestamps and kubernetes_build_info); with
`--configz FILE` (a KubeProxyConfiguration YAML) also /configz on the metrics port, as kube-proxy
serves it: its internal config type, which has no JSON tags, so Go field names ("Mode", "IPTables").
Run inside the test node's netns; prints "ready" once both ports listen.

The failure signals follow kube-proxy's versions (pkg/proxy/metrics/metrics.go): before v1.33 no labels
(no_local_endpoints_total has traffic_policy), from v1.33 an `ip_family` label on each ("IPv4"/"IPv6",
both with --dual-stack); iptables restore counters in iptables mode (partial ones from v1.27), nftables
sync failures in nftables mode. `--failures-per-scrape N` makes the mode's failure counter rise by N on
every /metrics request, as a kube-proxy whose syncs keep failing.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def go_time(ts: float) -> str:
    # Go's time.Time.String(): "2024-05-01 10:00:00.123456789 +0000 UTC"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC")


GO_NAMES = {"iptables": "IPTables", "ipvs": "IPVS", "nftables": "NFTables", "clusterCIDR": "ClusterCIDR",
            "oomScoreAdj": "OOMScoreAdj"}


def go_named(value: object) -> object:
    """v1alpha1 JSON names -> the internal type's Go field names, as configz marshals them."""
    if isinstance(value, dict):
        return {GO_NAMES.get(k, k[:1].upper() + k[1:]): go_named(v) for k, v in value.items()
                if k not in ("apiVersion", "kind")}
    if isinstance(value, list):
        return [go_named(v) for v in value]
    return value


def configz_body(path: str) -> str:
    import yaml

    return json.dumps({"kubeproxy.config.k8s.io": go_named(yaml.safe_load(open(path).read()))})
def _version(text: str) -> tuple[int, int]:
    major, minor = text.lstrip("v").split(".")[:2]
    return int(major), int(minor)


PROGRAMMING_BUCKETS = [0.25, 0.5, *range(1, 60), *range(60, 120, 5), *range(120, 301, 30)]


def signal_lines(a: argparse.Namespace, scrape: int, last: float, queued: float) -> list[str]:
    """kube-proxy's sync and failure series as the version in `a.version` writes them."""
    labelled = _version(a.version) >= (1, 33)
    families = ["IPv4", "IPv6"] if a.dual_stack else ["IPv4"]
    sets = [f'ip_family="{f}"' for f in families] if labelled else [""]
    out: list[str] = []

    def family(name: str, kind: str, help_: str, value: float, extra: str = "") -> None:
        out.append(f"# HELP {name} [ALPHA] {help_}")
        out.append(f"# TYPE {name} {kind}")
        for s in sets:
            labels = ",".join(x for x in (s, extra) if x)
            out.append(f"{name}{{{labels}}} {value:.9e}" if labels else f"{name} {value:.9e}")

    p = "kubeproxy_sync_proxy_rules_"
    family(p + "last_queued_timestamp_seconds", "gauge", "The last time a sync of proxy rules was queued", queued)
    family(p + "last_timestamp_seconds", "gauge", "The last time proxy rules were successfully synced", last)
    failed = a.failures_per_scrape * scrape
    if a.mode == "nftables":
        family(p + "nftables_sync_failures_total", "counter", "Cumulative proxy nftables sync failures", failed)
    else:
        family(p + "iptables_restore_failures_total", "counter", "Cumulative proxy iptables restore failures", failed)
        if _version(a.version) >= (1, 27):
            family(p + "iptables_partial_restore_failures_total", "counter",
                   "Cumulative proxy iptables partial restore failures", a.partial_failures_per_scrape * scrape)
    out += [f"# HELP {p}endpoint_changes_pending [ALPHA] Pending proxy rules Endpoint changes",
            f"# TYPE {p}endpoint_changes_pending gauge", f"{p}endpoint_changes_pending {a.pending}",
            f"# HELP {p}service_changes_pending [ALPHA] Pending proxy rules Service changes",
            f"# TYPE {p}service_changes_pending gauge", f"{p}service_changes_pending 0"]
    out.append(f"# HELP {p}no_local_endpoints_total [ALPHA] Number of services with a Local traffic policy and "
               "no endpoints")
    out.append(f"# TYPE {p}no_local_endpoints_total gauge")
    for s in sets:
        for policy, n in (("external", 0), ("internal", a.no_local_internal)):
            labels = ",".join(x for x in (s, f'traffic_policy="{policy}"') if x)
            out.append(f"{p}no_local_endpoints_total{{{labels}}} {n}")
    name = "kubeproxy_network_programming_duration_seconds"
    out += [f"# HELP {name} [ALPHA] In Cluster Network Programming Latency in seconds", f"# TYPE {name} histogram"]
    n = 10 * scrape
    for s in sets:
        prefix = s + "," if s else ""
        for le in PROGRAMMING_BUCKETS:
            out.append(f'{name}_bucket{{{prefix}le="{le:g}"}} {n if a.programming_seconds <= le else 0}')
        out.append(f'{name}_bucket{{{prefix}le="+Inf"}} {n}')
        out.append(f"{name}_sum{{{s}}} {n * a.programming_seconds}" if s else f"{name}_sum {n * a.programming_seconds}")
        out.append(f"{name}_count{{{s}}} {n}" if s else f"{name}_count {n}")
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--healthz", default="127.0.0.1:10256")
    p.add_argument("--metrics", default="127.0.0.1:10249")
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--mode", default="iptables")
    p.add_argument("--version", default="v1.31.2")
    p.add_argument("--last-sync-age", type=float, default=5.0, help="seconds since the last successful sync")
    p.add_argument("--queued-age", type=float, default=None, help="seconds since a change was queued")
    p.add_argument("--configz", default=None, help="serve this KubeProxyConfiguration YAML on /configz")
    p.add_argument("--failures-per-scrape", type=int, default=0)
    p.add_argument("--partial-failures-per-scrape", type=int, default=0)
    p.add_argument("--dual-stack", action="store_true")
    p.add_argument("--pending", type=int, default=0, help="endpoint changes pending")
    p.add_argument("--no-local-internal", type=int, default=0)
    p.add_argument("--programming-seconds", type=float, default=0.5,
                   help="each scrape adds 10 observations of this network programming latency")
    a = p.parse_args()
    scrapes = [0]
    started = time.time()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            now = time.time()
            last = now - a.last_sync_age
            port = self.server.server_address[1]
            if self.path == "/healthz" and port == healthz_port:
                body = (f'{{"lastUpdated": "{go_time(last)} m=+{last - started:.9f}","currentTime": '
                        f'"{go_time(now)} m=+{now - started:.9f}", "nodeEligible": true}}')
                self._send(a.status, body, "application/json")
            elif self.path == "/configz" and port == metrics_port and a.configz:
                self._send(200, configz_body(a.configz), "application/json")
            elif self.path == "/proxyMode" and port == metrics_port:
                self._send(200, a.mode, "text/plain; charset=utf-8")
            elif self.path == "/metrics" and port == metrics_port:
                queued = now - a.queued_age if a.queued_age is not None else last - 1
                scrapes[0] += 1
                lines = signal_lines(a, scrapes[0], last, queued)
                lines += [
                    "# HELP kubernetes_build_info [ALPHA] A metric with a constant '1' value labeled by major, "
                    "minor, git version, git commit, git tree state, build date, Go version, and compiler from "
                    "which Kubernetes was built, and platform on which it is running.",
                    "# TYPE kubernetes_build_info gauge",
                    f'kubernetes_build_info{{build_date="2024-10-22T20:28:14Z",compiler="gc",git_commit="5864a46",'
                    f'git_tree_state="clean",git_version="{a.version}",go_version="go1.22.8",major="1",'
                    f'minor="31",platform="linux/amd64"}} 1',
                ]
                self._send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._send(404, "404 page not found\n", "text/plain; charset=utf-8")

    def listen(addr: str) -> ThreadingHTTPServer:
        host, port = addr.rsplit(":", 1)
        srv = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    healthz_port = int(a.healthz.rsplit(":", 1)[1])
    metrics_port = int(a.metrics.rsplit(":", 1)[1])
    listen(a.healthz)
    if metrics_port != healthz_port:
        listen(a.metrics)
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin or kills us


if __name__ == "__main__":
    main()
