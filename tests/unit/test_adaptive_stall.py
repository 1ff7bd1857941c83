"""The adaptive stall of broadcast gathering: never shorter than configured, longer for slow fleets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nmc.client.request_many import adaptive_stall

seconds = st.floats(min_value=0, max_value=600, allow_nan=False)


def test_a_quick_fleet_keeps_the_configured_stall() -> None:
    # 20 local nodes: replies within 15 ms, gaps of a millisecond.
    assert adaptive_stall(0.3, longest_gap=0.002, since_publish=0.015) == 0.3


def test_a_pause_already_seen_may_come_again_longer() -> None:
    assert adaptive_stall(0.3, longest_gap=0.4, since_publish=0.5) == 0.8


def test_a_fleet_that_answers_late_gets_a_longer_wait() -> None:
    # 5,000 simulated nodes on a busy machine: the first reply came 18 s after publishing.
    assert adaptive_stall(0.3, longest_gap=0.0, since_publish=18.0) == 9.0


@given(stall=seconds, gap=seconds, age=seconds)
def test_never_shorter_than_the_configured_stall_nor_the_longest_gap(stall: float, gap: float, age: float) -> None:
    wait = adaptive_stall(stall, gap, age)
    assert wait >= stall and wait > gap or gap == 0 and wait >= stall
