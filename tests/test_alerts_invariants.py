"""Lifecycle invariants under random sequences of evaluations, acknowledgements and manual resolves."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.alerts.history import AlertHistory
from engine.alerts.lifecycle import Lifecycle
from engine.alerts.rules import Observation, Window
from engine.alerts.thresholds import Thresholds
from engine.errors import Conflict
from engine.store import ControlStore

T0 = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
THRESHOLDS = Thresholds.parse({"cooldown_minutes": 3, "recovery_evaluations": 2})

# One step: ("eval", [(key, value, samples_ok)...]) | ("ack", n) | ("resolve", n); each step is a minute.
observation = st.tuples(st.integers(1, 3), st.sampled_from([0.0, 0.05, 0.09, 0.1, 0.2, 0.3, 0.9]),
                        st.sampled_from([True, True, True, False]))
evaluation = st.tuples(st.just("eval"), st.lists(observation, min_size=1, max_size=3, unique_by=lambda o: o[0]))
step = st.one_of(evaluation, evaluation, evaluation, evaluation,
                 st.tuples(st.just("ack"), st.integers(0, 5)), st.tuples(st.just("resolve"), st.integers(0, 5)))


def obs(key: int, value: float, enough: bool, now: dt.datetime) -> Observation:
    return Observation("error_spike", "error_rate", "key", key, value, 0.1, 0.25, 50 if enough else 5,
                       Window(now - dt.timedelta(minutes=5), now), sufficient=enough, conclusive=enough, key_id=key)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=10, max_size=40))
def test_lifecycle_invariants(tmp_path_factory, steps):
    store = ControlStore(tmp_path_factory.mktemp("inv") / "ezstats.db")
    lifecycle, history = Lifecycle(store), AlertHistory(store)
    for i, (kind, arg) in enumerate(steps):
        now = T0 + dt.timedelta(minutes=i)
        if kind == "eval":
            lifecycle.apply([obs(k, v, ok, now) for k, v, ok in arg], THRESHOLDS, now)
        else:
            alerts = history.all()
            if alerts:
                target = alerts[arg % len(alerts)].id
                try:
                    if kind == "ack":
                        lifecycle.acknowledge(target, "t", None, None, now)
                    else:
                        lifecycle.resolve(target, "t", None, now)
                except Conflict:
                    assert history.get(target).status == "resolved"

    alerts = history.all()
    by_fp: dict[str, list] = {}
    for a in alerts:
        by_fp.setdefault(a.fingerprint, []).append(a)
        assert (a.status == "resolved") == (a.resolved_at is not None)
        assert a.peak_value >= a.value and a.severity in ("warning", "critical")
        events = history.get(a.id).events
        assert events[0].kind == "opened" and [e.id for e in events] == sorted(e.id for e in events)
        assert [e.kind for e in events].count("resolved") == (a.status == "resolved")
    for same in by_fp.values():
        assert sum(a.status != "resolved" for a in same) <= 1
        same.sort(key=lambda a: a.id)
        for before, after in itertools.pairwise(same):
            # the earlier one was resolved before the later one opened, and not within the cooldown
            gap = after.opened_at - before.resolved_at
            assert gap >= dt.timedelta(minutes=THRESHOLDS.cooldown_minutes)
