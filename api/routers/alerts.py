"""/admin/alerts: alerts, their lifecycle, the thresholds and their backtest."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Response
from pydantic import AwareDatetime

from api.deps import AdminAuth, EngineDep
from api.schemas import AckBody, Int64, PreviewBody, ResolveBody
from engine.alerts import PreviewRun
from engine.alerts.history import Alert, AlertCounts, AlertFilter, AlertPage, AlertStatus, AlertType, Severity
from engine.alerts.thresholds import StoredThresholds, Thresholds

router = APIRouter(prefix="/admin/alerts", tags=["alerts"], dependencies=[AdminAuth])

_ETAG = re.compile(r'^(?:W/)?"?([0-9]{1,18})"?$')  # a version ETag; 18 digits keep it within int64
_ERRORS: dict[int | str, dict[str, Any]] = {401: {}, 404: {}, 409: {}, 422: {}}


@router.get("/thresholds", responses={401: {}})
def read_thresholds(engine: EngineDep, response: Response) -> StoredThresholds:
    """The alert thresholds in force (created with the defaults on first read); ETag = version."""
    return _tagged(engine.alerts.read_thresholds(), response)


@router.put("/thresholds", responses={401: {}, 412: {}, 422: {}, 428: {}, 507: {}})
def update_thresholds(
    engine: EngineDep,
    response: Response,
    body: Thresholds,
    if_match: Annotated[str | None, Header(description="The ETag (version) of the thresholds you edited.")] = None,
) -> StoredThresholds:
    """Replace the thresholds; If-Match must carry the current version (412 when stale)."""
    if if_match is None:
        raise HTTPException(428, "send If-Match with the ETag of GET /admin/alerts/thresholds")
    version = None if if_match.strip() == "*" else _version(if_match)
    return _tagged(engine.alerts.update_thresholds(body, version), response)


@router.post("/thresholds/preview", status_code=202, responses={401: {}, 409: {}, 422: {}})
def preview_thresholds(engine: EngineDep, body: PreviewBody, response: Response) -> PreviewRun:
    """Backtest: queue a replay of candidate thresholds over stored days; poll the Location for its result."""
    run = engine.alerts.submit_preview(body.thresholds, body.from_day, body.to_day)
    response.headers["Location"] = f"{router.prefix}/thresholds/preview/{run.id}"
    return run


@router.get("/thresholds/preview/{preview_id}", responses={401: {}, 404: {}})
def read_preview(engine: EngineDep, preview_id: Int64) -> PreviewRun:
    """A backtest run: status and progress, and the alerts it would have raised once done."""
    return engine.alerts.preview_run(preview_id)


@router.get("", responses=_ERRORS)
def read_alerts(
    engine: EngineDep,
    type: AlertType | None = None,
    severity: Severity | None = None,
    status: AlertStatus | None = None,
    master_id: Int64 | None = None,
    key_id: Int64 | None = None,
    since: Annotated[AwareDatetime | None, Query(description="Opened at or after (RFC 3339 with an offset).")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Opened before (RFC 3339 with an offset).")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlertPage:
    """Alerts, newest first, filtered and paginated by cursor."""
    where = AlertFilter(type, severity, status, master_id, key_id, since, until)
    return engine.alerts.list_alerts(where, cursor, limit)


@router.get("/stats", responses=_ERRORS)
def read_alert_stats(
    engine: EngineDep,
    since: Annotated[AwareDatetime | None, Query(description="Start (RFC 3339 with an offset); default 24 h before "
                                                "until.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="End, excluded (RFC 3339 with an offset); default "
                                                "now.")] = None,
    period: Annotated[str | None, Query(description="Instead of since/until: today, week, month, last7d, last30d "
                                        "or custom (with from/to), in the days of `tz`.")] = None,
    first: Annotated[dt.date | None, Query(alias="from", description="First day of a custom period.")] = None,
    last: Annotated[dt.date | None, Query(alias="to", description="Last day of a custom period, included.")] = None,
    tz: Annotated[str | None, Query(description="IANA time zone of the period's days; default EZ_DEFAULT_TZ.")
                  ] = None,
) -> AlertCounts:
    """Alerts opened in a period, counted by type, peak severity and status."""
    return engine.alerts.stats(since, until, period, first, last, tz)


@router.get("/{alert_id}", responses=_ERRORS)
def read_alert(engine: EngineDep, alert_id: Int64) -> Alert:
    """One alert with its event history."""
    return engine.alerts.get(alert_id)


@router.post("/{alert_id}/ack", responses=_ERRORS)
def ack_alert(engine: EngineDep, alert_id: Int64, body: Annotated[AckBody | None, Body()] = None) -> Alert:
    """Acknowledge an open alert, with an optional note and expiry."""
    body = body or AckBody()
    return engine.alerts.ack(alert_id, body.by, body.note, body.expires_at)


@router.post("/{alert_id}/resolve", responses=_ERRORS)
def resolve_alert(engine: EngineDep, alert_id: Int64, body: Annotated[ResolveBody | None, Body()] = None) -> Alert:
    """Resolve an open or acknowledged alert by hand (its cooldown starts now)."""
    body = body or ResolveBody()
    return engine.alerts.resolve(alert_id, body.by, body.note)


def _tagged(stored: StoredThresholds, response: Response) -> StoredThresholds:
    response.headers["ETag"] = f'"{stored.version}"'
    return stored


def _version(etag: str) -> int:
    found = _ETAG.match(etag.strip())
    if found is None:
        raise HTTPException(412, f"If-Match {etag[:40]!r} is not an ETag of the thresholds")
    return int(found.group(1))
