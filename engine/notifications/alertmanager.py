"""Prometheus Alertmanager: alerts pushed to its v2 API (`POST /api/v2/alerts`), as Prometheus pushes them.

An alert's labels are its identity in Alertmanager (routing, grouping, silences, inhibition): `alertname`
(the alert type), `severity`, `fingerprint` (ezstats'), `metric`, `scope` and the scope's ids. Labels
never carry values or names that change, so one ezstats alert is one Alertmanager alert per severity.
Firing alerts are sent without `endsAt`, so Alertmanager resolves them by itself `resolve_timeout`
after the last send if ezstats stops sending; the notifier re-sends open alerts well before that.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine.notifications.messages import Entry, Message, figure, rfc3339, summary, window_text

#: Where the notifier posts, under the channel's URL (the Alertmanager base URL).
PATH = "/api/v2/alerts"


def url(base: str) -> str:
    """The v2 alerts endpoint of an Alertmanager base URL (a URL already naming it is kept, a query too)."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    return urlunsplit(parts._replace(path=path if path.endswith(PATH) else path + PATH))


def alert_labels(entry: Entry) -> dict[str, str]:
    """The labels of one entry: its identity in Alertmanager."""
    s = entry.subject
    found = {"alertname": s.type, "severity": entry.severity, "fingerprint": s.fingerprint, "metric": s.metric,
             "scope": s.scope, "source": "ezstats"}
    for name in ("master_id", "key_id", "provider_key_id"):
        value = getattr(s, name)
        if value is not None:
            found[name] = str(value)
    if s.test:
        found["test"] = "true"
    return found


def alert_annotations(entry: Entry, message: Message) -> dict[str, str]:
    """What a person reads: summary, the figure against its threshold, the window, a link to the alert."""
    s = entry.subject
    found = {
        "summary": summary(entry),
        "value": f"{entry.value:g}" if entry.value is not None else "",
        "value_text": figure(s.metric, entry.value),
        "threshold": f"{s.threshold:g}",
        "critical_threshold": f"{s.critical_threshold:g}",
        "window": window_text(s),
        "console": message.link(s),
        "event": entry.event,
    }
    if entry.event_id is not None:
        found["event_id"] = str(entry.event_id)
    if not s.test:
        found["alert_id"] = str(s.alert_id)
    return {k: v for k, v in found.items() if v != ""}


def alert(entry: Entry, message: Message) -> dict[str, Any]:
    """One postable alert; `endsAt` only once it ended."""
    body: dict[str, Any] = {"labels": alert_labels(entry), "annotations": alert_annotations(entry, message),
                            "startsAt": rfc3339(entry.subject.opened_at), "generatorURL": message.link(entry.subject)}
    if entry.ends_at is not None:
        # Alertmanager refuses an end before the start; an alert opened and ended in one evaluation has both equal.
        body["endsAt"] = rfc3339(max(entry.ends_at, entry.subject.opened_at))
    return body


def body(message: Message) -> bytes:
    """The JSON array `POST /api/v2/alerts` takes."""
    return json.dumps([alert(e, message) for e in message.entries], separators=(",", ":")).encode()

