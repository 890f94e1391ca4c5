"""svcdoctor's command line: `check` (one shot), `serve` (the DaemonSet agent) and `explain` (the guide for
one Service).

Exit codes of `check`: 0 no warning or critical finding, 1 at least one, 2 could not run. Of `explain`:
0 every step passed, 1 a step found a problem, 2 could not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from agent import __version__
from agent.allocator import fix_mmap_threshold
from agent.catalogue import load
from agent.collect.base import CollectError
from agent.collect.cluster import ClusterProvider, FileProvider
from agent.config import DEFAULT_PORT, Config
from agent.model import SEVERITIES, Severity, Snapshot
from agent.report import text
from agent.report.document import document
from agent.runner import Runner
from agent.settings import parse_go_duration

EXIT_OK, EXIT_FINDINGS, EXIT_CANNOT_RUN = 0, 1, 2


class UsageError(Exception):
    pass


def _duration(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_go_duration(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (use 30s, 2m or seconds)") from None


def _positive_duration(value: str) -> float:
    seconds = _duration(value)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return seconds


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value!r}")
    return int(value)


def _severity_override(value: str) -> tuple[str, Severity]:
    fid, _, sev = value.partition("=")
    if fid not in load():
        raise argparse.ArgumentTypeError(f"unknown finding id {fid!r}")
    if sev not in SEVERITIES:
        raise argparse.ArgumentTypeError(f"severity must be one of {', '.join(SEVERITIES)}")
    return fid, sev


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--node-name", default=os.environ.get("NODE_NAME"),
                        help="this node's name (env NODE_NAME; default: the hostname)")
    common.add_argument("--host-root", default=os.environ.get("SVCDOCTOR_HOST_ROOT", "/"), type=Path,
                        help="where the host's / is mounted (env SVCDOCTOR_HOST_ROOT)")
    common.add_argument("--proc", default=os.environ.get("SVCDOCTOR_PROC", "/proc"), type=Path,
                        help="the host's /proc, seen with hostPID (env SVCDOCTOR_PROC)")
    common.add_argument("--sys", default=os.environ.get("SVCDOCTOR_SYS", "/sys"), type=Path,
                        help="the host's /sys (env SVCDOCTOR_SYS)")
    common.add_argument("--source-timeout", type=_positive_duration, default=20.0, metavar="DURATION",
                        help="how long one source may take before it is reported as failed (default 20s)")
    common.add_argument("--severity", action="append", type=_severity_override, default=[],
                        metavar="ID=LEVEL", help="re-grade a finding id (repeatable)")
    common.add_argument("--cluster-state", type=Path, metavar="FILE",
                        help="compare with `kubectl get services,endpointslices,nodes,pods -A -o json` output "
                             "instead of the live API")
    common.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), metavar="FILE",
                        help="kubeconfig for the API server (env KUBECONFIG; default: in-cluster config)")
    common.add_argument("--no-api", dest="api", action="store_false",
                        help="never contact the API server (node-only checks)")
    common.add_argument("--grace", type=_duration, default=None, metavar="DURATION",
                        help="ignore rule differences younger than this (default: twice kube-proxy's sync "
                             "period; 0 turns it off)")
    common.add_argument("--api-max-stale", type=_duration, default=300.0, metavar="DURATION",
                        help="how long the last good API state stands in while the API is unreachable (5m)")
    common.add_argument("-v", "--verbose", action="store_true")

    p = argparse.ArgumentParser(prog="svcdoctor", description=__doc__)
    p.add_argument("--version", action="version", version=f"svcdoctor {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", parents=[common], help="check this node once and print a report")
    c.add_argument("--json", action="store_true", help="print the svcdoctor/v1 JSON document")
    c.add_argument("--all", dest="all_findings", action="store_true",
                   help="list every info finding (by default a long run of one id is a count)")
    c.add_argument("--from", dest="from_file", type=Path, metavar="FILE",
                   help="re-run the checks on a saved snapshot instead of this host")
    c.add_argument("--snapshot-out", type=Path, metavar="FILE", help="save what was collected")
    s = sub.add_parser("serve", parents=[common], help="run as the node agent: /metrics /findings /healthz")
    s.add_argument("--port", type=_port, default=os.environ.get("SVCDOCTOR_PORT", str(DEFAULT_PORT)),
                   help=f"TCP port (env SVCDOCTOR_PORT; default {DEFAULT_PORT})")
    s.add_argument("--listen", default=os.environ.get("SVCDOCTOR_LISTEN", "0.0.0.0"), help="address to bind")
    s.add_argument("--interval", type=_positive_duration, default=os.environ.get("SVCDOCTOR_INTERVAL", "30s"),
                   metavar="DURATION", help="time between checks (env SVCDOCTOR_INTERVAL; default 30s)")
    s.add_argument("--tls-cert-file", type=Path, default=os.environ.get("SVCDOCTOR_TLS_CERT_FILE") or None,
                   metavar="FILE", help="serve HTTPS with this certificate, reloaded when it changes "
                                        "(env SVCDOCTOR_TLS_CERT_FILE)")
    s.add_argument("--tls-key-file", type=Path, default=os.environ.get("SVCDOCTOR_TLS_KEY_FILE") or None,
                   metavar="FILE", help="the certificate's key (env SVCDOCTOR_TLS_KEY_FILE)")
    s.add_argument("--auth", choices=("none", "kubernetes"), default=os.environ.get("SVCDOCTOR_AUTH") or "none",
                   help="kubernetes: /findings and /metrics need a bearer token allowed by TokenReview and "
                        "SubjectAccessReview (env SVCDOCTOR_AUTH; default none)")
    e = sub.add_parser("explain", parents=[common], help="walk the Debug Services guide for one Service")
    e.add_argument("service", metavar="NAMESPACE/SERVICE[:PORT]")
    e.add_argument("--json", action="store_true", help="print the svcdoctor-explain/v1 JSON document")
    e.add_argument("--all-nodes", action="store_true",
                   help="ask every node's agent (through the API server's pod proxy) and show which nodes differ")
    e.add_argument("--agent-namespace", default="svcdoctor", help="where the agents run (--all-nodes)")
    e.add_argument("--agent-selector", default="app.kubernetes.io/name=svcdoctor",
                   help="the agent pods' labels (--all-nodes)")
    for parser in (s, e):
        parser.add_argument("--no-probes", dest="probes", action="store_false",
                            help="send no traffic of svcdoctor's own (DNS queries, TCP connects)")
    return p


def config_from(args: argparse.Namespace) -> Config:
    kwargs: dict[str, object] = {
        "proc": args.proc, "sys": args.sys, "root": args.host_root, "source_timeout_s": args.source_timeout,
        "severity_overrides": dict(args.severity), "grace_s": args.grace, "cluster_state": args.cluster_state,
        "kubeconfig": Path(args.kubeconfig) if args.kubeconfig else None, "api": args.api,
        "api_max_stale_s": args.api_max_stale,
    }
    if args.node_name:
        kwargs["node_name"] = args.node_name
    if args.command == "serve":
        kwargs.update(port=int(args.port), listen=args.listen, interval_s=args.interval,
                      tls_cert_file=args.tls_cert_file, tls_key_file=args.tls_key_file, auth=args.auth)
    # `check` never probes: its findings are about what the node has, not about traffic it sends.
    kwargs["probes"] = args.command in ("serve", "explain") and args.probes
    return Config(**kwargs)  # type: ignore[arg-type]


def cluster_provider(cfg: Config, *, live: bool) -> ClusterProvider | None:
    """Where the expected state comes from: a file, the live API (in-cluster or kubeconfig), or nowhere."""
    if cfg.cluster_state is not None:
        from_file = FileProvider(cfg.cluster_state, cfg.node_name)
        if not live:  # a one-shot check with a file that cannot be used is a usage error, not a finding
            try:
                from_file.state()
            except CollectError as exc:
                raise UsageError(str(exc)) from None
        return from_file
    if not cfg.api or (cfg.kubeconfig is None and not os.environ.get("KUBERNETES_SERVICE_HOST")):
        return None
    from agent.collect.kubeapi import KubeApiProvider, api_client_from

    try:
        client, origin = api_client_from(str(cfg.kubeconfig) if cfg.kubeconfig else None)
    except Exception as exc:  # the kubernetes client raises its own ConfigException, and OSError
        raise UsageError(f"cannot load API server configuration: {exc}") from exc
    provider = KubeApiProvider(client, cfg.node_name, origin, max_stale_s=cfg.api_max_stale_s)
    if live:
        provider.start()
    else:
        provider.sync_once(timeout_s=cfg.source_timeout_s)
    return provider


def kube_proxy_configmap(cfg: Config) -> object | None:
    """kube-proxy's ConfigMap through the API, when the API is configured (a cluster-state file is not
    the API: then kube-proxy's config comes from the node alone)."""
    if cfg.cluster_state is not None or not cfg.api or (
            cfg.kubeconfig is None and not os.environ.get("KUBERNETES_SERVICE_HOST")):
        return None
    from agent.collect.kubeapi import api_client_from
    from agent.collect.kubeproxy_configmap import KubeProxyConfigMap

    try:
        client, _ = api_client_from(str(cfg.kubeconfig) if cfg.kubeconfig else None)
    except Exception as exc:  # as in cluster_provider
        raise UsageError(f"cannot load API server configuration: {exc}") from exc
    return KubeProxyConfigMap(client)


def cmd_check(args: argparse.Namespace, cfg: Config) -> int:
    if args.from_file:
        runner = Runner(cfg)
        try:
            snap = Snapshot.from_json(args.from_file.read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"cannot read snapshot {args.from_file}: {exc}") from exc
        if args.grace is not None:
            snap.settings.grace_s = args.grace
    else:
        runner = Runner(cfg, cluster=cluster_provider(cfg, live=False),
                        kube_proxy_configmap=kube_proxy_configmap(cfg))
        snap = runner.collect()
    if args.snapshot_out:
        try:
            args.snapshot_out.write_text(snap.to_json())
        except OSError as exc:
            raise UsageError(f"cannot write snapshot {args.snapshot_out}: {exc}") from exc
    report = runner.check(snap)
    if args.json:
        sys.stdout.write(json.dumps(document(report), indent=1) + "\n")
    else:
        sys.stdout.write(text.render(report, colour=sys.stdout.isatty(), all_findings=args.all_findings))
    return EXIT_FINDINGS if any(f.severity != "info" for f in report.findings) else EXIT_OK


def cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    from agent.serve import StartError, serve

    try:
        serve(Runner(cfg, cluster=cluster_provider(cfg, live=True), kube_proxy_configmap=kube_proxy_configmap(cfg)))
    except StartError as exc:
        raise UsageError(str(exc)) from exc
    return EXIT_OK


def setup_logging(*, verbose: bool) -> None:
    """svcdoctor's own steps at INFO (DEBUG with -v); libraries only when something is wrong.

    pyroute2 logs every netlink message at DEBUG, and urllib3 logs each of its retries as a warning; an
    unreachable API server is reported once, as `api.unreachable`, not as a dozen retry lines.
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("svcdoctor").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("urllib3", "kubernetes", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def cmd_explain(args: argparse.Namespace, cfg: Config) -> int:
    from agent.explain.model import ServiceQuery

    try:
        query = ServiceQuery.parse(args.service)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.all_nodes:
        return _explain_all_nodes(args, cfg, str(query))
    from agent.collect import COLLECTORS
    from agent.collect.probes import Prober
    from agent.collect.service_pods import pods_source_for
    from agent.explain.run import explain
    from agent.explain.walk import CannotExplain
    from agent.report import explain_text
    from agent.report.explain_json import explain_document

    provider = cluster_provider(cfg, live=False)
    if provider is None:
        raise UsageError("explain needs the API's view: --cluster-state FILE, --kubeconfig or in-cluster config")
    runner = Runner(cfg, collectors=tuple(c for c in COLLECTORS if c.name != "probes"), cluster=provider,
                    kube_proxy_configmap=kube_proxy_configmap(cfg))
    report = runner.check(runner.collect())
    try:
        expl = explain(report, query, pods=pods_source_for(provider), prober=Prober() if cfg.probes else None,
                       cfg=cfg)
    except CannotExplain as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        sys.stdout.write(json.dumps(explain_document(expl), indent=1) + "\n")
    else:
        sys.stdout.write(explain_text.render(expl, colour=sys.stdout.isatty()))
    return EXIT_OK if expl.healthy else EXIT_FINDINGS


def _explain_all_nodes(args: argparse.Namespace, cfg: Config, service: str) -> int:
    from agent.collect.agents import ask_all
    from agent.collect.base import CollectError
    from agent.collect.kubeapi import api_client_from
    from agent.report import explain_text
    from agent.report.explain_json import nodes_document

    if cfg.kubeconfig is None and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise UsageError("--all-nodes asks the agents through the API server: give --kubeconfig")
    try:
        client, _ = api_client_from(str(cfg.kubeconfig) if cfg.kubeconfig else None)
        agents = ask_all(client, service, namespace=args.agent_namespace, selector=args.agent_selector,
                         timeout_s=cfg.source_timeout_s)
    except CollectError as exc:
        raise UsageError(str(exc)) from exc
    except Exception as exc:  # the kubernetes client's ConfigException, OSError
        raise UsageError(f"cannot load API server configuration: {exc}") from exc
    doc = nodes_document(service, agents)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        sys.stdout.write(explain_text.render_nodes(doc, colour=sys.stdout.isatty()))
    if all(n["result"] == "error" for n in doc["nodes"]):
        return EXIT_CANNOT_RUN
    return EXIT_OK if all(n["result"] == "ok" for n in doc["nodes"]) else EXIT_FINDINGS


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # bad flags: argparse exits 2
    fix_mmap_threshold()  # agent/allocator.py: multi-MB tables each read are given back when freed
    setup_logging(verbose=args.verbose)
    try:
        cfg = config_from(args)
        commands = {"check": cmd_check, "serve": cmd_serve, "explain": cmd_explain}
        return commands[args.command](args, cfg)
    except UsageError as exc:
        print(f"svcdoctor: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
