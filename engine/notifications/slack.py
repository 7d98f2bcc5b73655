"""Slack: an incoming-webhook message in Block Kit, one section per alert, for people.

Each alert shows its severity, the scope with its registry names, the figure against its threshold over
its window, the events the message carries for it, and a link to the alert. Slack allows 50 blocks per
message; a message carries at most `MAX_EVENTS` events, so at most that many alerts (two blocks each).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from engine.notifications.messages import Entry, Message, figure, scope_text, window_text

MAX_EVENTS = 20
_ICONS = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
_RESOLVED = ":white_check_mark:"

#: Registry display name of (section, id), or None.
Names = Callable[[str, int], str | None]


def payload(message: Message, name: Names) -> dict[str, Any]:
    """The Block Kit message."""
    by_alert: dict[int, list[Entry]] = {}
    for entry in message.entries:
        by_alert.setdefault(entry.subject.alert_id, []).append(entry)
    firing = sum(any(e.firing for e in group) for group in by_alert.values())
    ended = len(by_alert) - firing
    parts = [f"{firing} firing"] if firing else []
    parts += [f"{ended} resolved"] if ended else []
    title = "ezstats test" if any(e.subject.test for e in message.entries) else "ezstats alerts: " + ", ".join(parts)
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    lines = []
    for group in by_alert.values():
        current = next((e for e in group if e.firing), group[-1])
        text = _section(current, name)
        lines.append(text.split("\n", 1)[0])
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _context(current, message)}]})
    return {"text": _escape(f"{title}: " + "; ".join(lines))[:3000], "blocks": blocks[:50]}


def body(message: Message, name: Names) -> bytes:
    """The message as JSON bytes."""
    return json.dumps(payload(message, name), separators=(",", ":"), ensure_ascii=False).encode()


def _section(entry: Entry, name: Names) -> str:
    s = entry.subject
    if s.test:
        return "*Test notification* from ezstats: this channel receives alerts."
    if entry.firing:
        head = f"{_ICONS.get(entry.severity, '')} *{entry.severity.upper()}* · *{s.type}*"
    else:
        head = f"{_RESOLVED} *RESOLVED* · *{s.type}*" if entry.event == "resolved" else (
            f"{_RESOLVED} *no longer {entry.severity}* · *{s.type}*")
    limit = s.critical_threshold if entry.severity == "critical" and entry.firing else s.threshold
    where = _escape(scope_text(s, name))
    figures = (f"`{s.metric}` {_escape(figure(s.metric, entry.value))} against threshold "
               f"{_escape(figure(s.metric, limit))} over {_escape(window_text(s))}")
    return f"{head} — {' → '.join(entry.events) or entry.event}\n{where[:1].upper()}{where[1:]}\n{figures}"


def _context(entry: Entry, message: Message) -> str:
    s = entry.subject
    link = message.link(s)
    label = "Channel settings" if s.test else f"Alert #{s.alert_id}"
    return f"<{link}|{label}> · `{_escape(s.fingerprint)}` · opened {s.opened_at:%Y-%m-%d %H:%M} UTC"


def _escape(text: str) -> str:
    """Slack's mrkdwn: &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
