from __future__ import annotations

from dataclasses import dataclass

from agent.checks.memo import by_identity


@dataclass
class Thing:
    value: int


def test_same_object_is_computed_once_and_an_equal_new_object_again() -> None:
    calls: list[int] = []

    @by_identity
    def double(t: Thing, extra: int) -> int:
        calls.append(t.value)
        return 2 * t.value + extra

    a = Thing(1)
    assert (double(a, 0), double(a, 0)) == (2, 2)
    assert calls == [1]
    assert double(Thing(1), 0) == 2  # equal but not the same object: computed again
    assert double(a, 5) == 7  # other arguments are part of the key
    assert calls == [1, 1, 1]


def test_results_of_live_objects_are_kept_and_those_of_dead_ones_dropped() -> None:
    calls: list[int] = []

    @by_identity
    def square(t: Thing) -> int:
        calls.append(t.value)
        return t.value * t.value

    v4, v6 = Thing(4), Thing(6)
    assert [square(v4), square(v6), square(v4), square(v6)] == [16, 36, 16, 36]
    assert calls == [4, 6]  # the two do not push each other out
    del v4
    assert square(Thing(7)) == 49  # a new object (which may reuse v4's id) is computed, not answered from v4's
    assert calls == [4, 6, 7]


def test_carried_state_is_set_aside_as_a_whole_and_put_back() -> None:
    from agent.checks.memo import carried, nothing_carried

    state = carried({4: "last derivation"})
    with nothing_carried():
        assert state == {}
        state[4] = "derived afresh"
    assert state == {4: "last derivation"}
