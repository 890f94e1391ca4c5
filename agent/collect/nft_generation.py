"""The nf_tables ruleset generation and table list: whether anything in nf_tables changed since the
last read, for the price of two netlink requests. Read-only (GET requests only).

Every committed nf_tables transaction in a network namespace (any table, any family: iptables-nft's
restores, kube-proxy's nftables mode, anyone's `nft`) bumps one 32-bit counter, which NFT_MSG_GETGEN
returns. A reader that remembers the generation its last read was taken at can skip a read whose
generation is unchanged. The table list (NFT_MSG_GETTABLE, one dump) says which tables exist, so a read
can tell a table it was not shown from one that is not there. The requests go through the one
nf_tables netlink client, agent/collect/nftables_netlink.py; this module only says what the iptables
reader asks of it, with every failure as a NetlinkError (an OSError: the reader then reads without the
skip).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from agent.collect.base import CollectError
from agent.collect.nftables_netlink import (
    FAMILY_NAMES,
    NFT_MSG_GETCHAIN,
    NFT_MSG_GETTABLE,
    Interrupted,
    NfTablesSocket,
    attrs,
    nla,
    text,
)

NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 1, 3
FAMILY_NUMBERS = {name: number for number, name in FAMILY_NAMES.items()}
T = TypeVar("T")


class NetlinkError(OSError):
    """The request failed or its answer did not make sense (the reader then reads without the skip)."""


@dataclass(frozen=True)
class NfTablesInfo:
    generation: int
    tables: tuple[tuple[str, str], ...]  # (family, name) of every table, as the kernel lists them


def _ask(timeout_s: float, question: Callable[[NfTablesSocket], T]) -> T:
    try:
        nl = NfTablesSocket(timeout_s)
    except OSError as exc:
        raise NetlinkError(exc.errno, f"nf_tables netlink: {exc.strerror or exc}") from None
    try:
        return question(nl)
    except (CollectError, Interrupted) as exc:  # a malformed reply, or a dump cut by a concurrent change
        raise NetlinkError(f"nf_tables netlink: {exc or type(exc).__name__}") from None
    finally:
        nl.close()


def _tables(nl: NfTablesSocket) -> tuple[tuple[str, str], ...]:
    return tuple((FAMILY_NAMES.get(m[0], str(m[0])), text(attrs(m, 4).get(NFTA_TABLE_NAME)))
                 for m in nl.dump(NFT_MSG_GETTABLE, socket.AF_UNSPEC, with_family=True))


def read_info(timeout_s: float = 2.0) -> NfTablesInfo:
    """The generation and the table list, consistent with each other (read again if a commit came
    between them). Raises NetlinkError (an OSError) when nf_tables cannot be asked."""

    def consistent(nl: NfTablesSocket) -> NfTablesInfo:
        for _ in range(3):
            gen = nl.generation()
            tables = _tables(nl)
            if nl.generation() == gen:
                return NfTablesInfo(gen, tables)
        raise NetlinkError("nf_tables changed during three table dumps in a row")

    return _ask(timeout_s, consistent)


def list_chains(family: str, table: str, timeout_s: float = 2.0) -> tuple[str, ...]:
    """The names of a table's chains (one GETCHAIN dump of that table: names only, no rules)."""
    def names(nl: NfTablesSocket) -> tuple[str, ...]:
        return tuple(text(attrs(m).get(NFTA_CHAIN_NAME)) for m in nl.dump(
            NFT_MSG_GETCHAIN, FAMILY_NUMBERS[family], nla(NFTA_CHAIN_TABLE, table.encode() + b"\0")))

    return _ask(timeout_s, names)


def read_generation(timeout_s: float = 2.0) -> int:
    """The nf_tables ruleset generation alone (one NFT_MSG_GETGEN request)."""
    return _ask(timeout_s, lambda nl: nl.generation())
