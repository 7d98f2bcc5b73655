"""Several notifiers on one data dir deliver each event once per channel, in order: two processes running the
notifier in a loop (racing on the outbox's cursor and leases), and two `ezstats scheduler` processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from engine import Engine, Settings
from tests.alert_traffic import NOW, Clock, error_rate_engine, minutes, requests, set_thresholds, store
from tests.receivers import Receiver, receiver, wait_for

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("a", "b", "c")
LOOP = """
import json, sys, time
from pathlib import Path
from engine import Engine, Settings
engine = Engine(Settings(data_dir=Path(sys.argv[1]), scheduler_enabled=False))
stop, total = Path(sys.argv[2]), {"delivered": 0, "busy": 0, "runs": 0}
Path(sys.argv[3]).touch()
while not stop.exists():
    run = engine.notifications.run()
    total["delivered"] += run.delivered
    total["busy"] += len(run.busy)
    total["runs"] += 1
print(json.dumps(total))
"""


def make_engine(tmp_path: Path) -> Engine:
    return error_rate_engine(tmp_path, Clock())


def open_alerts(engine: Engine, keys: range, minute: int) -> list[int]:
    at = NOW + minutes(minute)
    store(engine, *[requests(at, 1, 70, key_id=k) + requests(at, 1, 30, key_id=k, status=500) for k in keys])
    return engine.alerts.run_once(at).opened


def expected(engine: Engine) -> list[int]:
    """Ids of every lifecycle event a default channel takes, from the alerts themselves."""
    wanted = ("opened", "escalated", "de-escalated", "resolved", "ack_expired")
    return sorted(e.id for a in engine.alerts.history.all() for e in engine.alerts.get(a.id).events
                  if e.kind in wanted)


def received(r: Receiver, channel: str) -> list[int]:
    return [e["id"] for q in r.requests if q.path.endswith("/" + channel) for e in q.json()["events"]]


def settled(engine: Engine, r: Receiver, count: int) -> bool:
    return all(len(received(r, c)) >= count for c in CHANNELS) and not engine.notifications.deliveries(
        status="pending").deliveries


def check_once_in_order(engine: Engine, r: Receiver) -> None:
    ids = expected(engine)
    for channel in CHANNELS:
        got = received(r, channel)
        assert [i for i, n in Counter(got).items() if n > 1] == [], channel    # no duplicates
        assert got == ids, channel                                            # all, in event order
    assert engine.notifications.deliveries(status="dead").deliveries == []


@pytest.mark.slow
def test_two_notifier_processes_deliver_each_event_once(tmp_path):
    engine = make_engine(tmp_path)
    stop = tmp_path / "stop"
    with receiver(delay=0.01) as r:
        for channel in CHANNELS:
            engine.notifications.put_channel(channel, {"type": "webhook", "url": f"{r.url}/{channel}", "secret": "k"})
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        workers = [subprocess.Popen([sys.executable, "-c", LOOP, str(engine.settings.data_dir), str(stop),
                                     str(tmp_path / f"ready-{i}")], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
                   for i in range(2)]
        try:
            wait_for(lambda: all((tmp_path / f"ready-{i}").exists() for i in range(2)), timeout=60)
            # Events keep arriving while both notifiers run: alerts open, some resolve, more open.
            opened = open_alerts(engine, range(1, 31), 0)
            for alert_id in opened[:10]:
                engine.alerts.resolve(alert_id, "ops", "fixed")
            opened += open_alerts(engine, range(31, 61), 1)
            for alert_id in opened[30:45]:
                engine.alerts.resolve(alert_id, "ops", "fixed")
            wait_for(lambda: settled(engine, r, len(expected(engine))), timeout=120, every=0.2)
        finally:
            stop.touch()
            totals = [json.loads(w.communicate(timeout=60)[0]) for w in workers]
        assert len(expected(engine)) == 60 + 25
        check_once_in_order(engine, r)
        # Every delivery was counted once, by whichever process sent it.
        assert sum(t["delivered"] for t in totals) == 3 * 85
        assert all(t["runs"] > 1 for t in totals), totals


@pytest.mark.slow
def test_two_schedulers_deliver_each_event_once(tmp_path):
    engine = make_engine(tmp_path)
    with receiver(delay=0.01) as r:
        for channel in CHANNELS:
            engine.notifications.put_channel(channel, {"type": "webhook", "url": f"{r.url}/{channel}", "secret": "k"})
        quiet = "0 0 1 1 *"   # the other jobs stay out of the way
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EZ_DATA_DIR": str(engine.settings.data_dir),
               "EZ_SCHEDULE_NOTIFIER": "1", **{f"EZ_SCHEDULE_{job}": quiet for job in (
                   "ROLLUPS", "DAILY_STATS", "ALERT_DETECTOR", "LOG_CLEANER", "COMPACTION", "QUOTA_RESET")}}
        schedulers = [subprocess.Popen([sys.executable, "-m", "cli", "scheduler"], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            opened = open_alerts(engine, range(1, 21), 0)
            wait_for(lambda: settled(engine, r, 20), timeout=60, every=0.2)
            for alert_id in opened[:10]:
                engine.alerts.resolve(alert_id, "ops", "fixed")
            open_alerts(engine, range(21, 31), 1)
            wait_for(lambda: settled(engine, r, 40), timeout=60, every=0.2)
            time.sleep(2.5)   # a few more ticks of both schedulers: nothing is sent again
        finally:
            for s in schedulers:
                s.send_signal(signal.SIGTERM)
            errors = [s.communicate(timeout=60)[1] for s in schedulers]
        assert all(s.returncode == 0 for s in schedulers), errors
        check_once_in_order(engine, r)
        runs = [run for run in engine.jobs.runs("notifier", limit=1000) if run.trigger == "schedule"]
        # Each 1 s tick ran once, by whichever scheduler claimed it first (the other one races on the outbox
        # only through the job's lock and tick claim; the test above races two notifiers on it directly).
        assert len(runs) >= 3 and all(run.outcome == "ok" for run in runs)
        assert len({run.due_at for run in runs}) == len(runs)
        assert {run.owner.split(":")[1] for run in runs} <= {str(s.pid) for s in schedulers}


def test_a_dead_notifiers_lease_lapses(tmp_path):
    clock = Clock()
    engine = Engine(Settings(data_dir=tmp_path / "data", scheduler_enabled=False), clock=clock)
    set_thresholds(engine, rate_limit={"enabled": False}, provider_down={"enabled": False},
                   traffic_spike={"enabled": False})
    with receiver() as r:
        engine.notifications.put_channel("a", {"type": "webhook", "url": r.url, "secret": "k"})
        open_alerts(engine, range(1, 2), 0)
        engine.notifications.notifier.fan_out(clock.now)
        # A notifier claimed the batch and died before sending it: its lease holds the channel for a while.
        claimed = engine.notifications.outbox.claim("a", "gone:1:thread:x", clock.now, 60, 0, 100)
        assert claimed is not None and len(claimed) == 1
        run = engine.notifications.run()
        assert run.busy == ["a"] and r.requests == []
        clock.now = NOW + minutes(1) + dt.timedelta(seconds=1)
        assert engine.notifications.run().delivered == 1 and len(r.requests) == 1
        assert engine.notifications.run().messages == 0
