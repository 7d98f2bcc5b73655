"""Alert notifications: delivery latency from detection to a receiver, and outbox throughput.

One command: `python bench/notifications.py` (options: --events, --channels, --samples, --slow-samples).
Everything runs on loopback in a temporary data dir, against a webhook receiver in this process:
- latency, notifier run right after the detector: the detector records an alert event (one evaluation
  over fresh traffic), the notifier runs at once; time from the detector's return to the receiver's read;
- latency, through the scheduler (as inside `ezstats serve`): the real `Scheduler` with the notifier job
  every 1 s and every 10 s (the default); time from the detector's return to the receiver's read;
- throughput, a backlog: --events alert events for --channels webhook channels queued at once (a receiver
  back after an outage), drained by notifier runs; deliveries/s and messages/s, against the floor of
  POSTing the very same messages (same bodies, same receiver, one client) with nothing else;
- throughput, steady: one event at a time, a notifier run for each (queue, lease, send, record): deliveries/s
  against the floor of one POST per event.
Prints medians, p95s and ratios to the floors measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine, Settings  # noqa: E402
from engine.alerts.rules import Observation, Window  # noqa: E402
from engine.scheduler import Scheduler  # noqa: E402
from engine.times import utc_now  # noqa: E402
from tests.alert_traffic import requests, set_thresholds, store  # noqa: E402
from tests.receivers import Receiver  # noqa: E402

QUIET = "0 0 1 1 *"


def engine_at(folder: Path, **settings: object) -> Engine:
    engine = Engine(Settings(data_dir=folder, scheduler_enabled=False, **settings))  # type: ignore[arg-type]
    set_thresholds(engine, rate_limit={"enabled": False}, provider_down={"enabled": False},
                   traffic_spike={"enabled": False})
    return engine


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def arrivals(receiver: Receiver, count: int, timeout: float = 30.0) -> list[float]:
    deadline = time.monotonic() + timeout
    while len(receiver.requests) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the receiver got {len(receiver.requests)} of {count} messages")
        time.sleep(0.001)
    return [r.at for r in receiver.requests]


def detect(engine: Engine, key: int) -> float:
    """Open one alert over fresh traffic of `key`; returns when the event was recorded (time.time())."""
    now = utc_now()
    store(engine, requests(now, 1, 70, key_id=key), requests(now, 1, 30, key_id=key, status=500))
    engine.alerts.run_once(now)
    return time.time()


def latency_inline(folder: Path, samples: int) -> list[float]:
    engine = engine_at(folder)
    with_receiver = Receiver().start()
    try:
        engine.notifications.put_channel("bench", {"type": "webhook", "url": with_receiver.url, "secret": "k"})
        recorded = []
        for key in range(1, samples + 1):
            recorded.append(detect(engine, key))
            engine.notifications.run()
        got = arrivals(with_receiver, samples)
    finally:
        with_receiver.stop()
    return [(a - r) * 1000 for a, r in zip(got, recorded, strict=True)]


def latency_scheduled(folder: Path, samples: int, every: str) -> list[float]:
    quiet = {f"schedule_{job}": QUIET for job in ("rollups", "daily_stats", "alert_detector", "log_cleaner",
                                                   "compaction", "quota_reset")}
    engine = engine_at(folder, schedule_notifier=every, **quiet)
    receiver = Receiver().start()
    scheduler = Scheduler(engine.jobs, engine.clock)
    try:
        engine.notifications.put_channel("bench", {"type": "webhook", "url": receiver.url, "secret": "k"})
        scheduler.start()
        time.sleep(1.5)          # the first (late) ticks of every job are done
        recorded = []
        phases = random.Random(7)
        for key in range(1, samples + 1):
            time.sleep(phases.uniform(0, int(every)))   # detections at random moments between two ticks
            recorded.append(detect(engine, key))
            arrivals(receiver, key, timeout=3 * int(every) + 5)
        got = arrivals(receiver, samples)
    finally:
        scheduler.stop()
        receiver.stop()
    return [(a - r) * 1000 for a, r in zip(got, recorded, strict=True)]


def queue_events(engine: Engine, keys: range, start: dt.datetime) -> None:
    """One alert opened per key in one evaluation, through the real lifecycle."""
    window = Window(start - dt.timedelta(minutes=5), start)
    observations = [Observation("error_spike", "error_rate", "key", k, 0.3, 0.1, 0.25, 100, window, True, True,
                                master_id=1, key_id=k) for k in keys]
    engine.alerts.lifecycle.apply(observations, engine.alerts.read_thresholds().thresholds, start)


def throughput_backlog(folder: Path, events: int, channels: int) -> dict[str, float]:
    engine = engine_at(folder)
    receiver = Receiver().start()
    try:
        for c in range(channels):
            engine.notifications.put_channel(f"c{c}", {"type": "webhook", "url": f"{receiver.url}/{c}", "secret": "k"})
        queue_events(engine, range(1, events + 1), utc_now())
        started = time.perf_counter()
        messages = 0
        while True:
            run = engine.notifications.run()
            messages += run.messages
            if run.messages == 0:
                break
        elapsed = time.perf_counter() - started
        delivered = sum(len(r.json()["events"]) for r in receiver.requests)
        assert delivered == events * channels, (delivered, events * channels)
        bodies = [(r.path, r.body) for r in receiver.requests]
        # The floor: the same messages POSTed straight from memory, one after the other.
        receiver.requests.clear()
        base = receiver.url.rsplit("/", 1)[0]
        floor_started = time.perf_counter()
        with httpx.Client() as client:
            for path, body in bodies:
                client.post(base + path, content=body, headers={"Content-Type": "application/json"})
        floor = time.perf_counter() - floor_started
    finally:
        receiver.stop()
    return {"deliveries": delivered, "messages": messages, "seconds": elapsed, "floor_seconds": floor}


def throughput_steady(folder: Path, events: int) -> dict[str, float]:
    engine = engine_at(folder)
    receiver = Receiver().start()
    try:
        engine.notifications.put_channel("c", {"type": "webhook", "url": receiver.url, "secret": "k"})
        elapsed = 0.0
        sent = 0
        for key in range(1, events + 1):
            queue_events(engine, range(key, key + 1), utc_now())   # the detector's part, not timed
            started = time.perf_counter()
            sent += engine.notifications.run().delivered             # read, queue, lease, send, record
            elapsed += time.perf_counter() - started
        bodies = [r.body for r in receiver.requests]
        receiver.requests.clear()
        floor_started = time.perf_counter()
        with httpx.Client() as client:
            for body in bodies:
                client.post(receiver.url, content=body, headers={"Content-Type": "application/json"})
        floor = time.perf_counter() - floor_started
    finally:
        receiver.stop()
    return {"deliveries": sent, "seconds": elapsed, "floor_seconds": floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000, help="Events in the backlog (default 1000).")
    parser.add_argument("--channels", type=int, default=3, help="Webhook channels of the backlog (default 3).")
    parser.add_argument("--samples", type=int, default=30, help="Latency samples, inline and 1 s (default 30).")
    parser.add_argument("--slow-samples", type=int, default=8, help="Latency samples at the 10 s default (8).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inline = latency_inline(folder / "inline", args.samples)
        every_1 = latency_scheduled(folder / "s1", args.samples, "1")
        every_10 = latency_scheduled(folder / "s10", args.slow_samples, "10")
        backlog = throughput_backlog(folder / "backlog", args.events, args.channels)
        steady = throughput_steady(folder / "steady", min(args.events, 300))
    print(f"{'latency, detection -> receiver':44} {'median':>10} {'p95':>10} {'max':>10}")
    for label, values in (("notifier run right after the detector", inline),
                          ("scheduler, EZ_SCHEDULE_NOTIFIER=1", every_1),
                          ("scheduler, EZ_SCHEDULE_NOTIFIER=10 (default)", every_10)):
        print(f"{label:44} {statistics.median(values):>8.1f}ms {percentile(values, 0.95):>8.1f}ms "
              f"{max(values):>8.1f}ms")
    print()
    rate = backlog["deliveries"] / backlog["seconds"]
    floor = backlog["deliveries"] / backlog["floor_seconds"]
    print(f"backlog: {backlog['deliveries']:.0f} deliveries ({args.events} events x {args.channels} channels) in "
          f"{backlog['messages']:.0f} messages: {backlog['seconds']:.2f} s = {rate:,.0f} deliveries/s, "
          f"{backlog['messages'] / backlog['seconds']:,.1f} messages/s; floor (the same POSTs alone) "
          f"{backlog['floor_seconds']:.2f} s: ratio {rate / floor:.2f}")
    rate = steady["deliveries"] / steady["seconds"]
    floor = steady["deliveries"] / steady["floor_seconds"]
    print(f"steady: {steady['deliveries']:.0f} events, each its own notifier run and message: "
          f"{rate:,.0f} deliveries/s; "
          f"floor (one POST each) {floor:,.0f}/s: ratio {rate / floor:.2f}")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
