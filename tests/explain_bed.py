"""A small cluster on a test node for `svcdoctor explain`: real pods (network namespaces on a bridge) with
real listeners, kube-proxy's iptables rules for their Services (v1.3x layout, kube-proxy's chain hashes),
a DNS server pod behind the kube-dns Service, kubelet with clusterDNS, and the API objects as a
`kubectl get ... -o json` file. Each knob breaks one thing the guide looks for.

Addresses: pods 10.244.0.0/24 on cni0 (the node is 10.244.0.1), ClusterIPs 10.96.0.0/12.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.kube_hash import SVC, endpoint_chain, service_chain
from tests.testbed import DATA, FIXTURES, PY, STANDINS, Node

NODE = "test-node"
POD_CIDR = "10.244.0.0/16"
WEB_IP, WEB_CIP, DNS_POD_IP, DNS_CIP, API_CIP = "10.244.0.10", "10.96.0.20", "10.244.0.53", "10.96.0.10", "10.96.0.1"
NOW_ISO = "2020-01-01T00:00:00Z"  # objects changed long ago: no grace period applies


@dataclass
class Bed:
    """Knobs: a healthy default; each test turns one."""

    selector: dict[str, str] = field(default_factory=lambda: {"app": "web"})
    pod_labels: dict[str, str] = field(default_factory=lambda: {"app": "web", "tier": "fe"})
    target_port: str = "http"
    container_port_name: str = "http"
    listening: bool = True  # the web pod listens on 8080
    endpoints: bool = True  # the EndpointSlice lists the web pod
    web_rules: bool = True  # kube-proxy's rules for web are on the node
    dns_knows_web: bool = True
    restarts: int = 0
    resolv_nameserver: str = "10.255.255.53"
    web_selectorless: bool = False


def _svc(ns: str, name: str, cip: str, ports: list[dict[str, Any]], selector: dict[str, str] | None
         ) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ClusterIP", "clusterIP": cip, "clusterIPs": [cip], "ports": ports}
    if selector is not None:
        spec["selector"] = selector
    return {"kind": "Service", "apiVersion": "v1", "metadata": {"namespace": ns, "name": name,
            "creationTimestamp": NOW_ISO}, "spec": spec}


def _slice(ns: str, svc: str, ports: list[dict[str, Any]], ips: list[str]) -> dict[str, Any]:
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "addressType": "IPv4",
            "metadata": {"namespace": ns, "name": f"{svc}-abcde", "labels": {"kubernetes.io/service-name": svc},
                         "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": NOW_ISO}},
            "ports": ports, "endpoints": [{"addresses": [ip], "nodeName": NODE, "conditions": {
                "ready": True, "serving": True, "terminating": False}} for ip in ips]}


def _pod(ns: str, name: str, ip: str, labels: dict[str, str], ports: list[dict[str, Any]], restarts: int = 0
         ) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                              "conditions": [{"type": "Ready", "status": "True"}],
                              "containerStatuses": [{"name": "c", "restartCount": restarts, "ready": True,
                                                     "state": {"running": {}}}]}
    if restarts:
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        status["containerStatuses"][0]["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": finished}}
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "ports": ports}]}, "status": status}


def objects(bed: Bed) -> list[dict[str, Any]]:
    web_port = {"name": "http", "port": 80, "protocol": "TCP", "targetPort": bed.target_port}
    out = [
        {"kind": "Node", "apiVersion": "v1", "metadata": {"name": NODE},
         "status": {"addresses": [{"type": "InternalIP", "address": "10.244.0.1"}]}},
        _svc("default", "kubernetes", API_CIP, [{"name": "https", "port": 443, "protocol": "TCP",
                                                 "targetPort": 6443}], None),
        _slice("default", "kubernetes", [{"name": "https", "port": 6443, "protocol": "TCP"}], ["10.244.0.1"]),
        _svc("kube-system", "kube-dns", DNS_CIP, [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}],
             {"k8s-app": "kube-dns"}),
        _slice("kube-system", "kube-dns", [{"name": "dns", "port": 53, "protocol": "UDP"}], [DNS_POD_IP]),
        _pod("kube-system", "coredns-1", DNS_POD_IP, {"k8s-app": "kube-dns"},
             [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]),
        _svc("default", "web", WEB_CIP, [web_port], None if bed.web_selectorless else bed.selector),
        _slice("default", "web", [{"name": "http", "port": 8080, "protocol": "TCP"}],
               [WEB_IP] if bed.endpoints else []),
        _pod("default", "web-1", WEB_IP, bed.pod_labels,
             [{"name": bed.container_port_name, "containerPort": 8080, "protocol": "TCP"}], bed.restarts),
    ]
    return out


def _rules(services: list[tuple[str, str, int, str, list[str]]]) -> str:
    """kube-proxy's full-sync restore input for (port name, ClusterIP, port, protocol, endpoints)."""
    base = (DATA / "kubeadm" / "kube-proxy-no-services.rules").read_text()
    filter_part, nat_part = base.split("*nat\n")
    rejects, chains, dispatch, rules = [], [], [], []
    for name, cip, port, proto, eps in services:
        p = proto.lower()
        if not eps:
            rejects.append(f'-A KUBE-SERVICES -m comment --comment "{name} has no endpoints" -m {p} -p {p} '
                           f"-d {cip} --dport {port} -j REJECT\n")
            continue
        svc = service_chain(SVC, name, p)
        chains.append(f":{svc} - [0:0]\n")
        dispatch.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" -m {p} -p {p} -d {cip} '
                        f"--dport {port} -j {svc}\n")
        rules.append(f'-A {svc} -m comment --comment "{name} cluster IP" -m {p} -p {p} -d {cip} --dport {port} '
                     f"! -s {POD_CIDR} -j KUBE-MARK-MASQ\n")
        for i, ep in enumerate(eps):
            sep = endpoint_chain(name, p, ep)
            chains.append(f":{sep} - [0:0]\n")
            left = len(eps) - i
            prob = "" if left == 1 else f" -m statistic --mode random --probability {1.0 / left:0.10f}"
            rules.append(f'-A {svc} -m comment --comment "{name} -> {ep}"{prob} -j {sep}\n')
            rules.append(f"-A {sep} -m comment --comment {name} -s {ep.split(':')[0]} -j KUBE-MARK-MASQ\n")
            rules.append(f"-A {sep} -m comment --comment {name} -m {p} -p {p} -j DNAT --to-destination {ep}\n")
    filter_part = filter_part.replace("COMMIT\n", "".join(rejects) + "COMMIT\n")
    head, _, tail = nat_part.partition("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports")
    nat = head + "".join(chains) + "".join(dispatch) + "-A KUBE-SERVICES -m comment --comment \"kubernetes service " \
        "nodeports" + tail.replace("COMMIT\n", "".join(rules) + "COMMIT\n")
    return filter_part + "*nat\n" + nat


def _listen(node: Node, netns: str, *args: str) -> None:
    proc = subprocess.Popen(["ip", "netns", "exec", netns, PY, str(STANDINS / "listeners.py"), *args], text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    node.procs.append(proc)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready or proc.stdout.readline().strip() != "ready":
        raise AssertionError(f"listener {args} did not start")


def build(node: Node, tmp: Path, bed: Bed) -> Path:
    """Sets the node up as `bed` says; returns the cluster-state file."""
    node.healthy_basics()
    node.kube_proxy("--hostname-override=test-node", config=DATA / "kubeadm" / "kube-proxy-config.conf")
    node.kube_proxy_http()
    node.bridge("cni0")
    node.sh("ip", "addr", "add", "10.244.0.1/24", "dev", "cni0")
    node.sh("ip", "route", "add", "10.96.0.0/12", "dev", "cni0")
    _, web_ns = node.pod_on_bridge("cni0", WEB_IP, hairpin=True)
    _, dns_ns = node.pod_on_bridge("cni0", DNS_POD_IP, hairpin=True)
    if bed.listening:
        _listen(node, web_ns, "tcp", "0.0.0.0", "8080")
    table = {"kubernetes.default.svc.cluster.local": [API_CIP], "kube-dns.kube-system.svc.cluster.local": [DNS_CIP]}
    if bed.dns_knows_web:
        table["web.default.svc.cluster.local"] = [WEB_CIP]
    _listen(node, dns_ns, "dns", "0.0.0.0", "53", json.dumps(table), "--count", str(tmp / "dns-count"))
    services = [("default/kubernetes:https", API_CIP, 443, "TCP", ["10.244.0.1:6443"]),
                ("kube-system/kube-dns:dns", DNS_CIP, 53, "UDP", [f"{DNS_POD_IP}:53"])]
    if bed.web_rules:
        services.append(("default/web:http", WEB_CIP, 80, "TCP", [f"{WEB_IP}:8080"] if bed.endpoints else []))
    node.nfacct_for_kube_proxy()
    node.iptables_restore(_rules(services), "legacy", noflush=True)
    node.iptables_restore((FIXTURES / "iptables" / "node-base.rules").read_text(), "legacy", noflush=True)
    resolv = tmp / "resolv.conf"
    resolv.write_text(f"search example.org\nnameserver {bed.resolv_nameserver}\n")
    kubelet_conf = tmp / "kubelet-config.yaml"
    kubelet_conf.write_text((DATA / "kubeadm" / "kubelet-config.yaml").read_text() + f"resolvConf: {resolv}\n")
    node.kubelet("--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock", config=kubelet_conf)
    state = tmp / "cluster.json"
    state.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects(bed)}))
    return state


def explain(node: Node, state: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = node.svcdoctor("explain", "--json", "--node-name", NODE, "--cluster-state", str(state), *args)
    if res.returncode not in (0, 1):
        raise AssertionError(f"svcdoctor explain exited {res.returncode}: {res.stderr}")
    return res.returncode, json.loads(res.stdout)
