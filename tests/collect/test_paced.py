"""Paced reads: an expensive source is read at most as often as its cost allows (~5% of a core)."""

from __future__ import annotations

import pytest

from agent.collect.base import CollectContext, Paced
from agent.config import Config

CTX = CollectContext(Config(node_name="n"), 5)


class Reads:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, ctx: CollectContext) -> list[int]:
        self.n += 1
        return [self.n]


def test_result_is_reused_until_its_cost_is_paid() -> None:
    reads = Reads()
    paced = Paced(reads, budget=1e-9)  # any read "costs" far more than the budget allows
    first = paced(CTX)
    assert paced(CTX) is first and reads.n == 1


def test_cheap_reads_are_not_held_back() -> None:
    reads = Reads()
    paced = Paced(reads, budget=1e9)  # a budget no read can exceed
    assert paced(CTX) == [1] and paced(CTX) == [2]


def test_a_failed_read_is_retried_at_once() -> None:
    calls: list[int] = []

    def flaky(ctx: CollectContext) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("nft exploded")
        return "ok"

    paced = Paced(flaky, budget=1e-9)
    with pytest.raises(RuntimeError):
        paced(CTX)
    assert paced(CTX) == "ok" and len(calls) == 2
