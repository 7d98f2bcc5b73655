"""Which events a channel takes: what it shows of an alert before and after each event."""

from __future__ import annotations

from engine.alerts.history import AlertChange
from engine.notifications.channels import StoredChannel

_RANK = {"info": 0, "warning": 1, "critical": 2}


class Skip:
    """The event is not for the channel."""


SKIP = Skip()


def shown_after(channel: StoredChannel, change: AlertChange, before: str | None) -> str | Skip | None:
    """What a channel shows of an alert after one of its events, or `SKIP` when the event is not the channel's.

    A channel shows an alert firing at its severity when that is at least the channel's minimum, else not
    at all. An event is the channel's when it changes what the channel shows (opened, escalated,
    de-escalated, resolved), or re-notifies a firing alert (ack expired); the de-escalation of an
    acknowledged alert is quiet unless the channel notifies acknowledged alerts. A resolution reaches
    every channel that showed the alert, whatever its filters say now.
    """
    kind = change.event.kind
    if kind == "resolved":
        return None if before is not None else SKIP
    ids = {"master": change.master_id, "key": change.key_id, "provider_key": change.provider_key_id}
    if not channel.matches(change.type, change.scope, ids):
        return SKIP
    severity = change.event.severity
    view = severity if severity is not None and _RANK.get(severity, -1) >= _RANK[channel.min_severity] else None
    if kind == "opened":
        return view if view is not None else SKIP
    if kind in ("escalated", "de-escalated"):
        if kind == "de-escalated" and change.acknowledged and not channel.notify_acknowledged:
            return SKIP
        return view if view != before else SKIP
    if kind == "ack_expired" or (kind == "acknowledged" and channel.notify_acknowledged):
        return view if view is not None else SKIP
    return SKIP
