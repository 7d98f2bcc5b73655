"""Prometheus metrics: HTTP metrics from the instrumentator, ingest counters, credential refreshes."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator

from engine import Engine

RECORDS_ACCEPTED = Counter("ezstats_ingest_records_accepted_total", "Log records stored by ingest.")
RECORDS_REJECTED = Counter("ezstats_ingest_records_rejected_total", "Log records in refused batches.")
BATCHES = Counter("ezstats_ingest_batches_total", "Ingest batches by outcome.", ["outcome"])


class CredentialRefreshes(Collector):
    """`ezstats_credential_refreshes_total{provider_type, outcome}`, read from the control store at each scrape.

    The engine counts every attempt in `ezstats.db` (the refresh job may run in another process, e.g.
    `ezstats scheduler`), so the counter is the same whichever process serves /metrics, and survives restarts.
    """

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("ezstats_credential_refreshes", "OAuth token refresh attempts by provider "
                                     "type and outcome.", labels=["provider_type", "outcome"])
        if self.engine is not None:
            for (provider_type, outcome), count in sorted(self.engine.credentials.counts().items()):
                family.add_metric([provider_type, outcome], count)
        yield family


CREDENTIAL_REFRESHES = CredentialRefreshes()
REGISTRY.register(CREDENTIAL_REFRESHES)


def install(app: FastAPI, engine: Engine | None = None) -> None:
    """Instrument the app and expose GET /metrics (the credential counter reads `engine`'s store)."""
    CREDENTIAL_REFRESHES.engine = engine
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)
