"""Deliveries as answered: one event on its way to one channel, its attempts, pages of them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DeliveryStatus = Literal["pending", "delivered", "dead", "cancelled"]
STATUSES = ("pending", "delivered", "dead", "cancelled")


class DeliveryAttempt(BaseModel):
    """One try of a delivery."""

    model_config = ConfigDict(frozen=True)

    id: int
    at: dt.datetime
    attempt: int = Field(description="1 for the first try (again 1 after a re-drive).")
    outcome: Literal["delivered", "retry", "dead"]
    status_code: int | None = Field(description="The receiver's HTTP status; null when none answered.")
    latency_ms: float | None
    error: str | None


class Delivery(BaseModel):
    """One lifecycle event on its way to one channel."""

    model_config = ConfigDict(frozen=True)

    id: int
    event_id: int = Field(description="The alert event delivered (an alert's `events[].id`).")
    channel: str
    alert_id: int
    kind: str = Field(description="The event: opened, escalated, de-escalated, resolved, ack_expired (or "
                      "acknowledged, for channels that notify acknowledged alerts).")
    event_at: dt.datetime
    severity: str | None = Field(description="The alert's severity at the event.")
    value: float | None = Field(description="The metric's value at the event.")
    status: DeliveryStatus = Field(description="`pending` (queued or retrying), `delivered`, `dead` (dead-lettered: "
                                   "retry it by hand) or `cancelled` (its channel was deleted).")
    attempts: int
    next_attempt_at: dt.datetime | None = Field(description="When a pending delivery is tried next (the channel "
                                                "sends in event order, so it may also wait for older ones).")
    created_at: dt.datetime
    finished_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[DeliveryAttempt] = Field(default_factory=list, description="Every attempt, oldest first "
                                               "(GET /admin/notifications/deliveries/{id} only).")


class DeliveryPage(BaseModel):
    """Deliveries, newest first."""

    deliveries: list[Delivery]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
