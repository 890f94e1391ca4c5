"""Generate kube-proxy-shaped nftables rule sets (nftables mode, v1.3x layout) of N Services x E endpoints.

The output is what kube-proxy's knftables would load: `table ip kube-proxy` with the real base chains,
maps, sets, hashed chain names (`service-<base32(sha256)[:8]>-ns/svc/tcp/port`) and element comments,
in the order `nft -f` accepts (sets and chains declared before rules that reference them). Every 10th
Service also gets a NodePort, every 50th has no endpoints (a no-endpoint-services reject), so the
reader meets every shape it must handle. Also writes the matching `kubectl get -o json` cluster state.

    python bench/gen_nftables.py 1000 5 /tmp/out   # -> /tmp/out.nft, /tmp/out.cluster.json
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

NODE_IP = "192.168.0.2"

BASE = """\
add table ip kube-proxy { comment "rules for kube-proxy" ; }
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy firewall-check
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; }
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject
add rule ip kube-proxy cluster-ips-check ip daddr 172.30.0.0/16 drop
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport \
vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
"""


def chain_base(name: str) -> str:
    """kube-proxy's hashAndTruncate: base32(sha256(name))[:8] + "-" + name."""
    return base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8] + "-" + name


def cluster_ip(i: int) -> str:
    return f"172.30.{i // 250}.{i % 250 + 1}"


def endpoint_ip(i: int, j: int) -> str:
    n = i * 8 + j
    return f"10.{1 + n // 62500}.{(n % 62500) // 250}.{n % 250 + 1}"


def generate(n_services: int, n_endpoints: int) -> tuple[str, dict[str, Any]]:
    out = [BASE]
    chains: list[str] = []
    rules: list[str] = []
    elements: list[str] = []
    items: list[dict[str, Any]] = []
    for i in range(n_services):
        ns, svc, port, target = f"ns{i % 100}", f"svc{i}", 80, 8080
        vip = cluster_ip(i)
        base = chain_base(f"{ns}/{svc}/tcp/p{port}")
        node_port = 30000 + i // 10 if i % 10 == 0 else None
        eps = [] if i % 50 == 49 else [endpoint_ip(i, j) for j in range(n_endpoints)]
        elements.append(f"add element ip kube-proxy cluster-ips {{ {vip} }}")
        spn = f"{ns}/{svc}:p{port}"
        if not eps:
            elements.append(f'add element ip kube-proxy no-endpoint-services {{ {vip} . tcp . {port} '
                            f'comment "{spn}" : goto reject-chain }}')
            if node_port:
                elements.append(f'add element ip kube-proxy no-endpoint-nodeports {{ tcp . {node_port} '
                                f'comment "{spn}" : goto reject-chain }}')
        else:
            svc_chain = f"service-{base}"
            chains.append(svc_chain)
            rules.append(f"add rule ip kube-proxy {svc_chain} ip daddr {vip} ip saddr != 10.0.0.0/8 "
                         "jump mark-for-masquerade")
            vmap = []
            for j, ep in enumerate(eps):
                ep_chain = "endpoint-" + chain_base(f"{ns}/{svc}/tcp/p{port}__{ep}/{target}")
                chains.append(ep_chain)
                rules.append(f"add rule ip kube-proxy {ep_chain} ip saddr {ep} jump mark-for-masquerade")
                rules.append(f"add rule ip kube-proxy {ep_chain} meta l4proto tcp dnat to {ep}:{target}")
                vmap.append(f"{j} : goto {ep_chain}")
            rules.append(f"add rule ip kube-proxy {svc_chain} numgen random mod {len(eps)} "
                         f"vmap {{ {', '.join(vmap)} }}")
            elements.append(f"add element ip kube-proxy service-ips {{ {vip} . tcp . {port} : goto {svc_chain} }}")
            if node_port:
                ext = f"external-{base}"
                chains.append(ext)
                rules.append(f"add rule ip kube-proxy {ext} jump mark-for-masquerade")
                rules.append(f"add rule ip kube-proxy {ext} goto {svc_chain}")
                elements.append(f"add element ip kube-proxy service-nodeports {{ tcp . {node_port} : goto {ext} }}")
        items.extend(_api_objects(ns, svc, vip, port, target, node_port, eps))
    out += [f"add chain ip kube-proxy {c}" for c in chains] + rules + elements
    return "\n".join(out) + "\n", {"apiVersion": "v1", "kind": "List", "items": items}


def changed_endpoints(n_services: int, n_endpoints: int, every: int, back: bool = False) -> str:
    """An nft script doing what kube-proxy does when the first endpoint of every `every`-th Service (with
    endpoints) is replaced by another (or, `back`, replaced again by the first): the new endpoint chain is
    added, the Service chain flushed and written again, the stale endpoint chain deleted."""
    out = []
    for i in range(0, n_services, every):
        if i % 50 == 49 or n_endpoints < 1:
            continue
        ns, svc, port, target = f"ns{i % 100}", f"svc{i}", 80, 8080
        base = chain_base(f"{ns}/{svc}/tcp/p{port}")
        eps = [endpoint_ip(i, j) for j in range(n_endpoints)]
        first, other = eps[0], endpoint_ip(i, 7)
        new, old = (first, other) if back else (other, first)
        eps[0] = new
        chains = ["endpoint-" + chain_base(f"{ns}/{svc}/tcp/p{port}__{ep}/{target}") for ep in eps]
        svc_chain, stale = f"service-{base}", "endpoint-" + chain_base(f"{ns}/{svc}/tcp/p{port}__{old}/{target}")
        out += [f"add chain ip kube-proxy {chains[0]}",
                f"add rule ip kube-proxy {chains[0]} ip saddr {new} jump mark-for-masquerade",
                f"add rule ip kube-proxy {chains[0]} meta l4proto tcp dnat to {new}:{target}",
                f"flush chain ip kube-proxy {svc_chain}",
                f"add rule ip kube-proxy {svc_chain} ip daddr {cluster_ip(i)} ip saddr != 10.0.0.0/8 "
                "jump mark-for-masquerade",
                f"add rule ip kube-proxy {svc_chain} numgen random mod {len(eps)} vmap {{ "
                f"{', '.join(f'{j} : goto {c}' for j, c in enumerate(chains))} }}",
                f"delete chain ip kube-proxy {stale}"]
    return "\n".join(out) + "\n"


def _api_objects(ns: str, svc: str, vip: str, port: int, target: int, node_port: int | None,
                 eps: list[str]) -> list[dict[str, Any]]:
    sport: dict[str, Any] = {"name": f"p{port}", "protocol": "TCP", "port": port, "targetPort": target}
    if node_port:
        sport["nodePort"] = node_port
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": svc},
               "spec": {"type": "NodePort" if node_port else "ClusterIP", "clusterIP": vip, "clusterIPs": [vip],
                        "ports": [sport]}}
    eslice = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"namespace": ns, "name": f"{svc}-abcde", "labels": {"kubernetes.io/service-name": svc}},
              "addressType": "IPv4", "ports": [{"name": f"p{port}", "protocol": "TCP", "port": target}],
              "endpoints": [{"addresses": [ep], "conditions": {"ready": True}} for ep in eps]}
    return [service, eslice]


def main() -> None:
    n, e, prefix = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    text, cluster = generate(n, e)
    prefix.with_suffix(".nft").write_text(text)
    prefix.with_suffix(".cluster.json").write_text(json.dumps(cluster))


if __name__ == "__main__":
    main()
