"""Stand-in for kube-proxy's HTTP endpoints, in kube-proxy's exact formats.

/healthz on the healthz port: `{"lastUpdated": ..., "currentTime": ..., "nodeEligible": ...}` with
200 or 503 (pkg/proxy/healthcheck/proxier_health.go); /proxyMode and /metrics on the metrics port
(plain-text mode; Prometheus text with kube-proxy's sync timestamps and kubernetes_build_info); with
`--configz FILE` (a KubeProxyConfiguration YAML) also /configz on the metrics port, as kube-proxy
serves it: its internal config type, which has no JSON tags, so Go field names ("Mode", "IPTables").
Run inside the test node's netns; prints "ready" once both ports listen.
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
    a = p.parse_args()
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
                lines = [
                    "# HELP kubernetes_build_info [ALPHA] A metric with a constant '1' value labeled by major, "
                    "minor, git version, git commit, git tree state, build date, Go version, and compiler from "
                    "which Kubernetes was built, and platform on which it is running.",
                    "# TYPE kubernetes_build_info gauge",
                    f'kubernetes_build_info{{build_date="2024-10-22T20:28:14Z",compiler="gc",git_commit="5864a46",'
                    f'git_tree_state="clean",git_version="{a.version}",go_version="go1.22.8",major="1",'
                    f'minor="31",platform="linux/amd64"}} 1',
                    "# HELP kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds [ALPHA] The last time a sync "
                    "of proxy rules was queued",
                    "# TYPE kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds gauge",
                    f"kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds {queued:.9e}",
                    "# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds [ALPHA] The last time proxy rules "
                    "were successfully synced",
                    "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge",
                    f"kubeproxy_sync_proxy_rules_last_timestamp_seconds {last:.9e}",
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
