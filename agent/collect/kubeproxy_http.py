"""kube-proxy's own endpoints: /healthz (JSON, 200/503), /proxyMode and /metrics.

Addresses follow kube-proxy's flags/config (wildcard binds are reached on loopback), and only loopback
or the node's own addresses are fetched (agent/collect/local_addrs.py). A refused
connection is an answer (kube-proxy is not serving), recorded in the data, not a collector error.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from agent.collect.base import CollectContext
from agent.collect.kubeproxy_metrics import MetricsReader
from agent.collect.local_addrs import local_opener, refusal
from agent.model import KubeProxyHTTP
from agent.settings import kube_proxy_settings, local_url

# The only series the checks read: keeping the rest would only cost memory.
WANTED = (
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
)
_NO_PROXY = local_opener()


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    refused = refusal(url)  # only this node's own addresses: never where a process's flags point elsewhere
    if refused is not None:
        raise urllib.error.URLError(refused)
    try:
        with _NO_PROXY.open(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read(4 << 20).decode(errors="replace")
    except urllib.error.HTTPError as exc:  # 503 from /healthz is an answer with a body
        return int(exc.code), exc.read(1 << 20).decode(errors="replace")


def _describe(exc: Exception) -> str:
    reason = getattr(exc, "reason", exc)
    return str(reason) or type(exc).__name__


def collect(ctx: CollectContext, signals: MetricsReader | None = None) -> KubeProxyHTTP:
    settings = kube_proxy_settings(ctx.kube_proxy)
    per_request = max(0.5, min(3.0, ctx.deadline_s / 4))
    out = KubeProxyHTTP(healthz_url=local_url(str(settings.healthz_address.value), 10256, "/healthz"))
    try:
        out.healthz_status, body = _get(out.healthz_url or "", per_request)
        try:
            parsed = json.loads(body)
            out.healthz_body = parsed if isinstance(parsed, dict) else {"body": body[:200]}
        except ValueError:
            out.healthz_body = {"body": body[:200]}
    except (OSError, urllib.error.URLError) as exc:
        out.healthz_error = _describe(exc)

    metrics_base = str(settings.metrics_address.value)
    try:
        _, body = _get(local_url(metrics_base, 10249, "/proxyMode"), per_request)
        out.proxy_mode = body.strip() or None
    except (OSError, urllib.error.URLError) as exc:
        out.proxy_mode_error = _describe(exc)
    try:
        status, body = _get(local_url(metrics_base, 10249, "/metrics"), per_request)
        if status != 200:
            out.metrics_error = f"HTTP {status}"
        else:
            for family in text_string_to_metric_families(body):
                for sample in family.samples:
                    if sample.name in WANTED:
                        out.metrics[sample.name] = float(sample.value)
                    elif sample.name == "kubernetes_build_info":
                        out.version = sample.labels.get("git_version") or out.version
            if signals is not None:
                out.signals = signals.read(body, time.time())
    except (OSError, urllib.error.URLError) as exc:
        out.metrics_error = _describe(exc)
    except ValueError as exc:  # the text parser's complaint about a malformed exposition
        out.metrics_error = f"unparseable metrics: {exc}"
    return out


class KubeProxyHTTPReader:
    """`collect` with a memory: kube-proxy's failure counters are compared with this reader's previous
    read (agent/collect/kubeproxy_metrics.py), so the snapshot says how much they rose."""

    def __init__(self) -> None:
        self.signals = MetricsReader()

    def __call__(self, ctx: CollectContext) -> KubeProxyHTTP:
        return collect(ctx, self.signals)
