"""kube-proxy's chain names, computed the way kube-proxy computes them (pure, no I/O).

A KUBE-SVC/SVL/EXT/FW chain name is a hash of the ServicePortName and protocol, and a KUBE-SEP name
also hashes the endpoint; so a chain can be tied to its Service without trusting rule comments, which
kube-proxy drops above 1,000 endpoints. Mirrors `portProtoHash` / `servicePortEndpointChainName` in
pkg/proxy/iptables/proxier.go and `servicePortChainNameBase` in pkg/proxy/nftables/proxier.go.
"""

from __future__ import annotations

import base64
import hashlib

# iptables chain prefixes kube-proxy derives from a service port's hash
SVC, SVL, EXT, FW, SEP = "KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_PAIRS = [a + b for a in _B32 for b in _B32]  # two characters per 10 bits: half the lookups
_SHIFTS = {length: tuple(range(5 * length - 10, -1, -10)) for length in (8, 16)}  # even lengths kube-proxy uses


def _hash(text: str, length: int) -> str:
    """base32(sha256(text))[:length], standard alphabet. Only the leading bits are encoded (Python's
    base64.b32encode is pure Python and slow enough to matter at 10k Services)."""
    bits = 5 * length
    nbytes = (bits + 7) // 8
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:nbytes], "big") >> (8 * nbytes - bits)
    shifts = _SHIFTS.get(length)
    if shifts is not None:
        return "".join([_B32_PAIRS[(value >> shift) & 1023] for shift in shifts])
    return "".join(_B32[(value >> (5 * (length - 1 - i))) & 31] for i in range(length))


def _hash_reference(text: str, length: int) -> str:
    """The plain definition, for tests."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:length]


def port_proto_hash(service_port: str, protocol: str) -> str:
    """base32(sha256("ns/name:port" + "tcp"))[:16], kube-proxy's portProtoHash."""
    return _hash(service_port + protocol.lower(), 16)


def service_chain(prefix: str, service_port: str, protocol: str) -> str:
    """KUBE-SVC-/KUBE-SVL-/KUBE-EXT-/KUBE-FW- chain of a service port."""
    return prefix + port_proto_hash(service_port, protocol)


def endpoint_chain(service_port: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-... of one endpoint ("ip:port") of a service port."""
    return SEP + _hash(service_port + protocol.lower() + endpoint, 16)


def nft_hash(name: str) -> str:
    """kube-proxy's nftables hash prefix alone: base32(sha256(name))[:8]."""
    return _hash(name, 8)


def _nft_hash_and_truncate(name: str) -> str:
    """kube-proxy's nftables hashAndTruncate: "HASH8-" + name, cut to 240 characters with "..."."""
    out = f"{_hash(name, 8)}-{name}"
    return out if len(out) <= 240 else out[:237] + "..."


def nft_service_chain_base(service_port: str, protocol: str) -> str:
    """nftables mode: "HASH8-ns/name/tcp/port", the part after "service-"/"external-"/... ."""
    ns_name, _, port = service_port.partition(":")
    return _nft_hash_and_truncate(f"{ns_name}/{protocol.lower()}/{port}")


def nft_endpoint_chain_base(service_port: str, protocol: str, endpoint: str) -> str:
    """nftables mode: "HASH8-ns/name/tcp/port__ip/port", the part after "endpoint-" (IPv6 ':' -> '.')."""
    ns_name, _, port = service_port.partition(":")
    ip, _, ep_port = endpoint.rpartition(":")
    ip = ip.strip("[]").replace(":", ".")
    return _nft_hash_and_truncate(f"{ns_name}/{protocol.lower()}/{port}__{ip}/{ep_port}")
