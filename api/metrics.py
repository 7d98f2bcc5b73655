"""Prometheus metrics: HTTP metrics from the instrumentator plus ingest counters."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import Counter
from prometheus_fastapi_instrumentator import Instrumentator

RECORDS_ACCEPTED = Counter("ezstats_ingest_records_accepted_total", "Log records stored by ingest.")
RECORDS_REJECTED = Counter("ezstats_ingest_records_rejected_total", "Log records in refused batches.")
BATCHES = Counter("ezstats_ingest_batches_total", "Ingest batches by outcome.", ["outcome"])


def install(app: FastAPI) -> None:
    """Instrument the app and expose GET /metrics."""
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)
