"""A whole nftables read that straddled a change is read again: the straddling read must be let go before
the next one is built beside it (at 10k Services each is about 30 MiB; serve's peak RSS target is 100 MiB)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

from agent.collect import nftables
from agent.model.nftables import NftablesState


def test_a_read_that_straddled_a_change_is_freed_before_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    generations = iter([1, 2, 2, 2])  # before/after the first read differ; the second read is consistent
    reads: list[weakref.ref[NftablesState]] = []
    alive_when_reading_again: list[bool] = []

    def read_all(nft: Any) -> NftablesState:
        if reads:
            gc.collect()
            alive_when_reading_again.append(reads[-1]() is not None)
        state = NftablesState()
        reads.append(weakref.ref(state))
        return state

    monkeypatch.setattr(nftables, "read_all", read_all)
    monkeypatch.setattr(nftables, "_generation", lambda nft: next(generations))
    state, generation = nftables.read_consistent(object())  # type: ignore[arg-type]
    assert generation == 2 and reads[-1]() is state
    assert alive_when_reading_again == [False]


def test_three_straddling_reads_fail_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = iter(range(100))
    monkeypatch.setattr(nftables, "read_all", lambda nft: NftablesState())
    monkeypatch.setattr(nftables, "_generation", lambda nft: next(counter))
    with pytest.raises(nftables.CollectError, match="changed during each of 3 reads"):
        nftables.read_consistent(object())  # type: ignore[arg-type]
