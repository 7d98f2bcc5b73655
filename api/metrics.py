"""Prometheus metrics: HTTP metrics from the instrumentator, ingest counters and group sizes, the notifier's and
credential refreshes' figures."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI, Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_fastapi_instrumentator import Instrumentator

from engine import Engine

RECORDS_ACCEPTED = Counter("ezstats_ingest_records_accepted_total", "Log records stored by ingest.")
RECORDS_REJECTED = Counter("ezstats_ingest_records_rejected_total", "Log records in refused batches.")
BATCHES = Counter("ezstats_ingest_batches_total", "Ingest batches by outcome.", ["outcome"])


class IngestGroups:
    """`ezstats_ingest_groups_total{stage}` and `ezstats_ingest_grouped_batches_total{stage}`: how many groups this
    process's intake (`validate`: joined decode and validation) and lake (`commit`: one staging, file per day and
    ledger transaction) formed, and the batches in them; their ratio is the mean group size."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        groups = CounterMetricFamily("ezstats_ingest_groups", "Ingest groups formed by this process, by stage.",
                                     labels=["stage"])
        batches = CounterMetricFamily("ezstats_ingest_grouped_batches", "Batches in those groups, by stage.",
                                      labels=["stage"])
        for stage, committer in (("validate", self.engine.intake), ("commit", self.engine.lake.committer)):
            groups.add_metric([stage], committer.groups)
            batches.add_metric([stage], committer.items)
        yield from (groups, batches)


class CredentialRefreshes:
    """`ezstats_credential_refreshes_total{provider_type, outcome}`, read from the control store at each scrape.

    The engine counts every attempt in `ezstats.db` (the refresh job may run in another process, e.g.
    `ezstats scheduler`), so the counter is the same whichever process serves /metrics, and survives restarts.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("ezstats_credential_refreshes", "OAuth token refresh attempts by provider "
                                     "type and outcome.", labels=["provider_type", "outcome"])
        for (provider_type, outcome), count in sorted(self.engine.credentials.counts().items()):
            family.add_metric([provider_type, outcome], count)
        yield family


class NotificationCollector:
    """The notifier's figures, read from the control store at each scrape, so they count the deliveries of
    every notifier on the data dir (a `ezstats scheduler` process included), not only this process's."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        figures = self.engine.notifications.metrics()
        deliveries = CounterMetricFamily(
            "ezstats_notification_deliveries", "Alert notification deliveries by channel and outcome: delivered, "
            "failed (an attempt that will be retried), dead (dead-lettered).", labels=["channel", "outcome"])
        resends = CounterMetricFamily("ezstats_notification_resends", "Re-sends of open alerts to Alertmanager "
                                      "channels by outcome (resent, resend_failed).", labels=["channel", "outcome"])
        pending = GaugeMetricFamily("ezstats_notification_pending", "Deliveries waiting to be sent (or retried).",
                                    labels=["channel"])
        dead = GaugeMetricFamily("ezstats_notification_dead_letters", "Dead-lettered deliveries waiting for a "
                                 "re-drive.", labels=["channel"])
        for channel in figures.channels:
            for outcome in ("delivered", "failed", "dead"):
                deliveries.add_metric([channel.channel, outcome], channel.totals.get(outcome, 0))
            for outcome in ("resent", "resend_failed"):
                if outcome in channel.totals:
                    resends.add_metric([channel.channel, outcome], channel.totals[outcome])
            pending.add_metric([channel.channel], channel.pending)
            dead.add_metric([channel.channel], channel.dead)
        lag = GaugeMetricFamily("ezstats_notification_outbox_lag_seconds", "Age of the oldest alert event not yet "
                                "delivered to a channel (0 when none waits).", value=figures.outbox_lag_seconds)
        yield from (deliveries, resends, pending, dead, lag)


def install(app: FastAPI, engine: Engine) -> None:
    """Instrument the app and expose GET /metrics: the process-wide metrics plus this engine's figures read from
    its control store (notifier deliveries, credential refreshes)."""
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app)
    own = CollectorRegistry(auto_describe=False)
    own.register(NotificationCollector(engine))  # type: ignore[arg-type]
    own.register(CredentialRefreshes(engine))  # type: ignore[arg-type]
    own.register(IngestGroups(engine))  # type: ignore[arg-type]

    @app.get("/metrics", include_in_schema=False)
    def read_metrics() -> Response:
        return Response(generate_latest(REGISTRY) + generate_latest(own), media_type=CONTENT_TYPE_LATEST)
