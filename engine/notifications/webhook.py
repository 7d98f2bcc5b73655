"""Webhooks: Alertmanager's webhook payload (version 4), signed with HMAC-SHA256.

Receivers written for Alertmanager read the message unchanged: `status`, `alerts[]` with `labels`,
`annotations`, `startsAt`, `endsAt` (Alertmanager's zero time while firing) and `fingerprint` (a hash of
the labels, as Alertmanager's). ezstats adds `events[]`: the lifecycle events the message carries, each
exactly once across all messages (deduplicate on `events[].id` if you must survive a retried send).

Signature: `X-Ezstats-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, over the
exact bytes of the body. A receiver recomputes it, compares in constant time and refuses a `t` more than
`REPLAY_WINDOW` seconds from its own clock, so a captured message cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from engine.notifications import alertmanager
from engine.notifications.messages import Entry, Message, rfc3339

SIGNATURE_HEADER = "X-Ezstats-Signature"
#: Seconds either side of the receiver's clock within which a signature's timestamp is accepted.
REPLAY_WINDOW = 300
#: Alertmanager's `endsAt` for an alert still firing.
ZERO_TIME = "0001-01-01T00:00:00Z"


def payload(message: Message, receiver: str) -> dict[str, Any]:
    """The version 4 webhook payload of a message."""
    alerts = [_alert(e, message) for e in message.entries]
    common_labels = _common([a["labels"] for a in alerts])
    return {
        "version": "4",
        "groupKey": f'{{}}:{{receiver="{receiver}"}}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": common_labels,
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": message.public_url,
        "alerts": alerts,
        "events": [{"id": e.id, "kind": e.kind, "alert_id": e.alert_id, "at": rfc3339(e.at), "severity": e.severity,
                    "value": e.value} for e in message.events],
    }


def body(message: Message, receiver: str) -> bytes:
    """The payload as the bytes that are signed and sent."""
    return json.dumps(payload(message, receiver), separators=(",", ":")).encode()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `X-Ezstats-Signature` value of a body: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: float | None = None, window: int = REPLAY_WINDOW) -> bool:
    """Whether `header` is a valid signature of `body` made within `window` seconds of `now` (a receiver's check)."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > window:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def fingerprint(labels: dict[str, str]) -> str:
    """A label set's identity as 16 hex digits (the role of Alertmanager's fingerprint)."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _alert(entry: Entry, message: Message) -> dict[str, Any]:
    labels = alertmanager.alert_labels(entry)
    return {
        "status": "firing" if entry.firing else "resolved",
        "labels": labels,
        "annotations": alertmanager.alert_annotations(entry, message),
        "startsAt": rfc3339(entry.subject.opened_at),
        "endsAt": ZERO_TIME if entry.ends_at is None else rfc3339(max(entry.ends_at, entry.subject.opened_at)),
        "generatorURL": message.link(entry.subject),
        "fingerprint": fingerprint(labels),
    }


def _common(items: list[dict[str, str]]) -> dict[str, str]:
    if not items:
        return {}
    return {k: v for k, v in items[0].items() if all(i.get(k) == v for i in items[1:])}
