"""The replay cache's policy (nmc.security.replay): a live id is refused, never forgotten to make room."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmc.security import ReplayCache, ReplayCapacityError, ReplayError, StaleRequestError, check_time
from nmc.security.errors import ClockSkewError


def seen_then_kept(cache: ReplayCache, request_id: str, expires_at: float, now: float, caller: str = "cert=a") -> bool:
    cache.check(request_id, now, now)
    return cache.remember(request_id, caller, expires_at, now)


def test_replay_within_window_is_refused():
    cache = ReplayCache()
    seen_then_kept(cache, "r1", expires_at=160.0, now=100.0)
    with pytest.raises(ReplayError) as info:
        cache.check("r1", 100.0, now=130.0)
    assert str(info.value) == "request id 'r1' was already seen"
    assert info.value.request_id == "r1"


def test_id_is_still_refused_at_the_last_moment_of_its_window():
    # check_time accepts |now - time| == ttl, so the id must be held until then inclusive.
    cache = ReplayCache()
    seen_then_kept(cache, "r1", expires_at=160.0, now=100.0)
    with pytest.raises(ReplayError):
        cache.check("r1", 100.0, now=160.0)


def test_same_id_is_accepted_after_expiry():
    cache = ReplayCache()
    seen_then_kept(cache, "r1", expires_at=160.0, now=100.0)
    assert seen_then_kept(cache, "r1", expires_at=260.0, now=160.5)
    with pytest.raises(ReplayError):
        cache.check("r1", 200.0, now=200.0)


def test_expired_entries_are_dropped_and_give_their_caller_room_back():
    cache = ReplayCache(100, per_caller=10)
    for i in range(10):
        seen_then_kept(cache, f"r{i}", expires_at=100.0 + i, now=50.0)
    assert cache.held_by("cert=a") == 10
    seen_then_kept(cache, "late", expires_at=500.0, now=105.5)
    assert len(cache) == 5 and cache.held_by("cert=a") == 5  # r6..r9 and late


def test_a_full_cache_refuses_new_ids_and_forgets_none():
    cache = ReplayCache(3, per_caller=3)
    for name, expiry in (("a", 10.0), ("b", 20.0), ("c", 30.0)):
        seen_then_kept(cache, name, expires_at=expiry, now=0.0)
    with pytest.raises(ReplayCapacityError) as info:
        cache.remember("d", "cert=b", 1000.0, now=1.0)
    assert (info.value.scope, info.value.limit) == ("node", 3)
    assert "never forgets an unexpired one" in info.value.reason
    for name in ("a", "b", "c"):  # every earlier id is still refused
        with pytest.raises(ReplayError):
            cache.check(name, 0.0, now=1.0)
    assert seen_then_kept(cache, "d", expires_at=1000.0, now=10.5)  # once "a" expired there is room


def test_one_caller_cannot_take_more_than_its_quota():
    cache = ReplayCache(100)
    assert cache.per_caller == 10  # a tenth by default
    for i in range(10):
        cache.remember(f"m{i}", "cert=mallory", 5000.0, now=0.0)
    with pytest.raises(ReplayCapacityError) as info:
        cache.remember("m10", "cert=mallory", 5000.0, now=0.0)
    assert (info.value.scope, info.value.limit, info.value.caller) == ("caller", 10, "cert=mallory")
    assert "cert=mallory already has 10 unexpired requests" in info.value.reason
    cache.remember("admin1", "cert=admin", 60.0, now=0.0)  # another caller still gets in


def test_an_already_expired_request_is_not_stored():
    cache = ReplayCache()
    assert cache.remember("r1", "cert=a", expires_at=50.0, now=100.0) is False
    assert len(cache) == 0


def test_requests_issued_up_to_not_before_are_refused():
    cache = ReplayCache(not_before=1000.0)
    with pytest.raises(StaleRequestError) as info:
        cache.check("r1", 1000.0, now=1001.0)
    assert info.value.reason.startswith("request issued before this node started (1970-01-01T00:16:40Z)")
    cache.check("r2", 1000.5, now=1001.0)


def test_restore_takes_back_every_live_id_beyond_the_limits():
    cache = ReplayCache(2, per_caller=1)
    for i in range(4):
        cache.restore(f"r{i}", "cert=a", 100.0, now=0.0)
    cache.restore("old", "cert=a", 5.0, now=10.0)  # expired: not kept
    assert len(cache) == 4 and cache.held_by("cert=a") == 4
    cache.restore("r0", "cert=a", 200.0, now=0.0)  # the later expiry wins
    assert sorted(cache.entries())[0] == ("r0", "cert=a", 200.0)
    with pytest.raises(ReplayCapacityError):
        cache.remember("new", "cert=b", 100.0, now=0.0)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_limits_must_be_positive_whole_numbers(bad):
    with pytest.raises(ValueError, match="capacity"):
        ReplayCache(bad)
    with pytest.raises(ValueError, match="per_caller"):
        ReplayCache(10, per_caller=bad)


def test_non_finite_times_are_refused():
    cache = ReplayCache()
    with pytest.raises(ValueError, match="finite"):
        cache.remember("r1", "cert=a", expires_at=float("nan"), now=1.0)
    with pytest.raises(ValueError, match="finite"):
        cache.check("r1", math.inf, now=1.0)


@pytest.mark.parametrize("error", [ReplayError("r1"), StaleRequestError(5.0, 10.0),
                                   ReplayCapacityError("caller", 10, "cert=m")])
def test_errors_pickle(error):
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again)) == (type(error), str(error))


def test_request_id_with_newline_gives_one_line_reason():
    assert "\n" not in str(ReplayError("a\nb"))
    assert "\n" not in str(ReplayCapacityError("caller", 1, "cert=a\nb"))


def test_check_time_refuses_a_request_dated_beyond_the_clock_skew():
    check_time(105.0, ttl=60.0, now=100.0, skew=5.0)
    with pytest.raises(ClockSkewError) as info:
        check_time(105.5, ttl=60.0, now=100.0, skew=5.0)
    assert info.value.reason == "request time is 5.5s in the future (allowed clock skew 5s): clock skew?"
    check_time(40.0, ttl=60.0, now=100.0, skew=5.0)  # the past is still bounded by the ttl alone
    with pytest.raises(ClockSkewError, match="expired"):
        check_time(39.0, ttl=60.0, now=100.0, skew=5.0)


_events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.sampled_from(["cert=x", "cert=y"]),
              st.integers(0, 5), st.integers(1, 10)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events=_events, capacity=st.integers(1, 4), per_caller=st.integers(1, 3))
def test_matches_a_simple_model(events, capacity, per_caller):
    """Refuses exactly the live ids a plain dict knows, and refuses for room exactly when the model is full."""
    cache = ReplayCache(capacity, per_caller=per_caller)
    model: dict[str, tuple[float, str]] = {}
    now = 0.0
    for request_id, caller, step, ttl in events:
        now += step
        model = {k: v for k, v in model.items() if v[0] >= now}
        if request_id in model:
            with pytest.raises(ReplayError):
                cache.check(request_id, now, now)
            continue
        cache.check(request_id, now, now)
        if len(model) >= capacity or sum(1 for v in model.values() if v[1] == caller) >= per_caller:
            with pytest.raises(ReplayCapacityError):
                cache.remember(request_id, caller, now + ttl, now)
        else:
            cache.remember(request_id, caller, now + ttl, now)
            model[request_id] = (now + ttl, caller)
        assert len(cache) == len(model)
