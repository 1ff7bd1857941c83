"""The replay cache refuses a request id seen within its ttl window (nmc.security.replay)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmc.security import ReplayCache, ReplayError


def test_replay_within_window_is_refused():
    cache = ReplayCache()
    cache.check_and_remember("r1", expires_at=160.0, now=100.0)
    with pytest.raises(ReplayError) as info:
        cache.check_and_remember("r1", expires_at=160.0, now=130.0)
    assert str(info.value) == "request id 'r1' was already seen"
    assert info.value.request_id == "r1"


def test_id_is_still_refused_at_the_last_moment_of_its_window():
    # check_time accepts |now - time| == ttl, so the id must be held until then inclusive.
    cache = ReplayCache()
    cache.check_and_remember("r1", expires_at=160.0, now=100.0)
    with pytest.raises(ReplayError):
        cache.check_and_remember("r1", expires_at=160.0, now=160.0)


def test_same_id_is_accepted_after_expiry():
    cache = ReplayCache()
    cache.check_and_remember("r1", expires_at=160.0, now=100.0)
    cache.check_and_remember("r1", expires_at=260.0, now=160.5)
    # ...and is remembered again with its new window.
    with pytest.raises(ReplayError):
        cache.check_and_remember("r1", expires_at=260.0, now=200.0)


def test_different_ids_do_not_interfere():
    cache = ReplayCache()
    for i in range(100):
        cache.check_and_remember(f"r{i}", expires_at=200.0, now=100.0)
    assert len(cache) == 100


def test_expired_entries_are_dropped():
    cache = ReplayCache()
    for i in range(10):
        cache.check_and_remember(f"r{i}", expires_at=100.0 + i, now=50.0)
    cache.check_and_remember("late", expires_at=500.0, now=105.5)
    assert len(cache) == 5  # r6..r9 and late


def test_full_cache_forgets_the_entry_closest_to_expiry():
    cache = ReplayCache(max_entries=2)
    cache.check_and_remember("b", expires_at=20.0, now=0.0)
    cache.check_and_remember("a", expires_at=10.0, now=0.0)
    cache.check_and_remember("c", expires_at=30.0, now=0.0)
    assert len(cache) == 2
    cache.check_and_remember("a", expires_at=10.0, now=1.0)  # forgotten, so accepted
    with pytest.raises(ReplayError):
        cache.check_and_remember("c", expires_at=30.0, now=1.0)


def test_an_already_expired_request_is_not_stored():
    cache = ReplayCache()
    cache.check_and_remember("r1", expires_at=50.0, now=100.0)
    assert len(cache) == 0


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_max_entries_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="max_entries"):
        ReplayCache(max_entries=bad)


def test_non_finite_times_are_refused():
    cache = ReplayCache()
    with pytest.raises(ValueError, match="finite"):
        cache.check_and_remember("r1", expires_at=float("nan"), now=1.0)


def test_replay_error_pickles():
    error = pickle.loads(pickle.dumps(ReplayError("r1")))
    assert (type(error), error.request_id, str(error)) == (ReplayError, "r1", "request id 'r1' was already seen")


def test_request_id_with_newline_gives_one_line_reason():
    assert "\n" not in str(ReplayError("a\nb"))


_events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 5), st.integers(1, 10)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events=_events)
def test_matches_a_simple_model(events):
    """With room for every id, the cache refuses exactly the ids a plain dict says are live."""
    cache = ReplayCache(max_entries=10)
    model: dict[str, float] = {}
    now = 0.0
    for request_id, step, ttl in events:
        now += step
        live = request_id in model and model[request_id] >= now
        if live:
            with pytest.raises(ReplayError):
                cache.check_and_remember(request_id, now + ttl, now)
        else:
            cache.check_and_remember(request_id, now + ttl, now)
            model[request_id] = now + ttl
