"""Alert thresholds: the validated settings model and its store (one row, id 1, versioned for If-Match).

What users tune at run time is data, not process configuration: it lives in the control-plane store,
is created with the defaults below on first read, and every update bumps `version`, which the API
serves as the ETag and checks against If-Match, so two admins editing at once cannot silently
overwrite each other.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError, model_validator

from engine.errors import InvalidParameter, PreconditionFailed
from engine.store import ControlStore

#: A share of requests (or of a quota): in (0, 1].
Ratio = Annotated[StrictFloat, Field(gt=0, le=1)]
#: A window length: whole minutes, at most one day.
Minutes = Annotated[StrictInt, Field(ge=1, le=1440)]
#: A minimum number of requests in a window before a rate is judged.
Samples = Annotated[StrictInt, Field(ge=1)]
#: A volume threshold (requests or tokens): a positive whole number.
Volume = Annotated[StrictInt, Field(ge=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Levels(_Model):
    """A warning and a critical level of the same ratio; critical is the more severe, so it is >= warning."""

    warning: float
    critical: float

    @model_validator(mode="after")
    def _critical_not_below_warning(self) -> _Levels:
        if self.critical < self.warning:
            raise ValueError(f"critical ({self.critical}) must be >= warning ({self.warning})")
        return self


class _Rule(_Levels):
    enabled: StrictBool = Field(True, description="Evaluate this rule.")


class _WindowRule(_Rule):
    window_minutes: Minutes = Field(5, description="Window length, whole minutes (default 5).")


class RateLimitRule(_WindowRule):
    """`rate_limit`: a master whose requests are answered 429 (rate limited) in the window."""

    min_samples: Samples = Field(20, description="Requests a master needs in the window to be judged (default 20).")
    min_count: Samples = Field(10, description="429 answers a master needs in the window to alert (default 10).")
    warning: Ratio = Field(0.10, description="Share of 429s (0-1] that raises a warning (default 0.10).")
    critical: Ratio = Field(0.30, description="Share of 429s (0-1] that makes it critical (default 0.30).")


class ErrorSpikeRule(_WindowRule):
    """`error_spike`: a key whose error rate (status >= 400, 429 excluded) is high in the window."""

    min_samples: Samples = Field(20, description="Requests a key needs in the window to be judged (default 20).")
    warning: Ratio = Field(0.10, description="Error rate (0-1] that raises a warning (seed default 0.10).")
    critical: Ratio = Field(0.25, description="Error rate (0-1] that makes it critical (default 0.25).")


class ProviderDownRule(_WindowRule):
    """`provider_down`: a provider key whose requests fail upstream (status >= 500) in the window."""

    min_samples: Samples = Field(10, description="Requests a provider key needs in the window (default 10).")
    warning: Ratio = Field(0.50, description="Failure rate (0-1] that raises a warning (seed default 0.50).")
    critical: Ratio = Field(0.90, description="Failure rate (0-1] that makes it critical (default 0.90).")


class QuotaRule(_Rule):
    """`quota_exceeded`: a key whose usage this quota period reaches a share of its limit."""

    warning: Ratio = Field(0.90, description="Used share of the quota (0-1] that raises a warning (seed 0.90).")
    critical: Ratio = Field(1.0, description="Used share of the quota (0-1] that makes it critical (default 1.0).")


class TrafficLimits(_Model):
    """Per-master traffic thresholds; in an override, a field left out keeps the rule's value."""

    master_rpm: Volume | None = Field(None, description="Requests per minute of one master (window average).")
    master_tpm: Volume | None = Field(None, description="Tokens (prompt + completion) per minute of one master.")
    master_rpd: Volume | None = Field(None, description="Requests of one master in the UTC day so far.")
    master_tpd: Volume | None = Field(None, description="Tokens of one master in the UTC day so far.")


class TrafficRule(_Model):
    """`traffic_spike`: global QPS, per-master volumes and surges; critical at `critical_factor` x a threshold.

    The absolute thresholds (seed) are capacity limits: their defaults sit about 2.5x over the busiest
    minute and day of a 5,000,000-records/day demo gateway, so tune them to your own capacity. The
    surge check catches a master suddenly sending several times its own recent rate, whatever its size.
    """

    enabled: StrictBool = Field(True, description="Evaluate this rule.")
    window_minutes: Minutes = Field(1, description="Window of the QPS, RPM and TPM checks, whole minutes (default 1).")
    min_samples: Samples = Field(
        10, description="Requests a master needs in the window before its RPM/TPM is judged (default 10)."
    )
    global_qps: Annotated[StrictFloat, Field(gt=0)] = Field(
        250.0, description="Requests per second of the whole gateway, window average (default 250)."
    )
    master_rpm: Volume = Field(3000, description="Requests per minute of one master, window average (default 3,000).")
    master_tpm: Volume = Field(
        6_000_000, description="Tokens per minute of one master, window average (default 6,000,000)."
    )
    master_rpd: Volume = Field(
        2_500_000, description="Requests of one master in the UTC day so far (default 2,500,000)."
    )
    master_tpd: Volume = Field(
        5_000_000_000, description="Tokens of one master in the UTC day so far (default 5,000,000,000)."
    )
    critical_factor: Annotated[StrictFloat, Field(ge=1, le=100)] = Field(
        2.0, description="Critical at this multiple of a threshold (seed: 2x)."
    )
    surge_factor: Annotated[StrictFloat, Field(gt=1, le=1000)] = Field(
        4.0, description="Surge: a master's request rate over `surge_window_minutes` at this multiple of its rate "
        "over the `surge_baseline_minutes` before (default 4; critical at critical_factor x that).",
    )
    surge_window_minutes: Minutes = Field(5, description="Window of the surge check, whole minutes (default 5).")
    surge_baseline_minutes: Minutes = Field(
        180, description="Baseline before the surge window, whole minutes (default 180)."
    )
    surge_min_samples: Samples = Field(
        30, description="Requests a master needs in the surge window before its surge is judged (default 30)."
    )
    overrides: dict[int, TrafficLimits] = Field(
        default_factory=dict, description="Per-master thresholds by master_id, replacing the ones above."
    )

    def limit(self, metric: str, master_id: int | None) -> float:
        """The warning threshold of `metric` for a master, its override winning."""
        override = self.overrides.get(master_id) if master_id is not None else None
        value = getattr(override, metric, None) if override is not None else None
        return float(value if value is not None else getattr(self, metric))


class Thresholds(_Model):
    """Every alert setting (seed `AlertThresholdConfig`): the body of GET/PUT /admin/alerts/thresholds.

    A PUT replaces the whole document: a field left out takes its default.
    """

    cooldown_minutes: Annotated[StrictInt, Field(ge=0, le=1440)] = Field(
        5, description="After an alert resolves, its fingerprint cannot open a new one for this long (default 5)."
    )
    recovery_ratio: Annotated[StrictFloat, Field(gt=0, lt=1)] = Field(
        0.8, description="An open alert recovers below this share of its threshold (0-1, default 0.8)."
    )
    recovery_evaluations: Annotated[StrictInt, Field(ge=1, le=1440)] = Field(
        3, description="Consecutive evaluations below the recovery level that resolve an alert (default 3)."
    )
    rate_limit: RateLimitRule = Field(default_factory=RateLimitRule)
    error_spike: ErrorSpikeRule = Field(default_factory=ErrorSpikeRule)
    provider_down: ProviderDownRule = Field(default_factory=ProviderDownRule)
    quota_exceeded: QuotaRule = Field(default_factory=QuotaRule)
    traffic_spike: TrafficRule = Field(default_factory=TrafficRule)

    @classmethod
    def parse(cls, body: Any) -> Thresholds:
        """Validate a candidate (a dict, a JSON text or a Thresholds).

        Raises:
            InvalidParameter: the body is not valid; the message names every bad field.
        """
        if isinstance(body, Thresholds):
            return body
        try:
            if isinstance(body, str | bytes):
                return cls.model_validate_json(body)
            return cls.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise InvalidParameter(f"invalid thresholds: {problems}") from None


class StoredThresholds(BaseModel):
    """The thresholds in force; `version` is also the ETag to send back as If-Match."""

    model_config = ConfigDict(frozen=True)

    version: int
    updated_at: dt.datetime
    updated_by: str
    thresholds: Thresholds


_SELECT = "SELECT version, body, updated_at, updated_by FROM alert_thresholds WHERE id = 1"


class ThresholdStore:
    """Row id 1 of `alert_thresholds`, created with the defaults on first read."""

    def __init__(self, store: ControlStore, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock

    def read(self) -> StoredThresholds:
        """The thresholds in force (the defaults, stored as version 1, if none were ever set)."""
        with self.store.connect(write=False) as con:
            row = con.execute(_SELECT).fetchone()
        if row is None:
            with self.store.connect() as con:
                con.execute(
                    "INSERT OR IGNORE INTO alert_thresholds (id, version, body, updated_at, updated_by)"
                    " VALUES (1, 1, ?, ?, 'defaults')",
                    (Thresholds().model_dump_json(), self._now()),
                )
                row = con.execute(_SELECT).fetchone()
        return StoredThresholds(thresholds=Thresholds.model_validate_json(row["body"]), version=row["version"],
                                updated_at=row["updated_at"], updated_by=row["updated_by"])

    def update(self, body: Any, if_match: int | None, by: str = "admin") -> StoredThresholds:
        """Replace the thresholds, atomically against `if_match` (None: unconditionally).

        Raises:
            InvalidParameter: the body is not valid (nothing changes).
            PreconditionFailed: `if_match` is not the current version.
        """
        candidate = Thresholds.parse(body)
        self.read()  # creates row 1 on a fresh store
        with self.store.connect() as con:
            # Compare-and-set in one statement: a concurrent update between a read and this write
            # makes the version differ and the row count 0.
            cur = con.execute(
                "UPDATE alert_thresholds SET version = version + 1, body = ?, updated_at = ?, updated_by = ?"
                " WHERE id = 1 AND (? IS NULL OR version = ?)",
                (candidate.model_dump_json(), self._now(), by, if_match, if_match),
            )
            if cur.rowcount == 0:
                current = con.execute("SELECT version FROM alert_thresholds WHERE id = 1").fetchone()["version"]
                raise PreconditionFailed(
                    f"thresholds are at version {current}, not {if_match}: read them again and retry"
                )
        return self.read()

    def _now(self) -> str:
        return self.clock().astimezone(dt.UTC).isoformat(timespec="seconds")


def to_json(thresholds: Thresholds) -> str:
    """Pretty JSON of a thresholds document (what `alerts thresholds` prints and `--set` reads)."""
    return json.dumps(thresholds.model_dump(mode="json"), indent=2)
