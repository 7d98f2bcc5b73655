"""Notification channels: where alerts are sent (Alertmanager, a webhook, Slack) and which ones.

A channel's secrets (a webhook's signing key, an Alertmanager bearer token, and a Slack incoming-webhook
URL, which is itself the credential) are stored in the control store and never leave the engine: answers
mask them, log lines name the channel only.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from engine.alerts.rules import TYPES
from engine.errors import InvalidParameter, NotFound
from engine.secretbox import SecretBox
from engine.store import ControlStore
from engine.times import iso

ChannelType = Literal["alertmanager", "webhook", "slack"]
CHANNEL_TYPES = ("alertmanager", "webhook", "slack")
MIN_SEVERITIES = ("warning", "critical")
SCOPE_KINDS = ("global", "master", "key", "provider_key")
MAX_INTERVAL_SECONDS = 86_400
MASK = "***"

#: What a channel's name may be (a URL path segment).
CHANNEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(CHANNEL_NAME)
_SCOPE = re.compile(r"^(global|master|key|provider_key)(?::([1-9][0-9]{0,18}))?$")


class Channel(BaseModel):
    """A notification channel as answered: its secrets masked."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: ChannelType
    url: str = Field(description="Where messages go; a Slack URL shows only its host and first path segment, "
                     "any URL's password and query values are masked.")
    secret_set: bool = Field(description="Whether a secret (webhook signing key, Alertmanager bearer token) is "
                             "stored; it is never answered.")
    min_severity: Literal["warning", "critical"]
    types: list[str] | None = Field(description="Alert types sent; null: every type.")
    scopes: list[str] | None = Field(description="Scopes sent (`global`, `master`, `key`, `provider_key`, or one "
                                     "entity: `master:12`, `key:1201`, `provider_key:101`); null: every scope.")
    min_interval_seconds: int = Field(description="Least time between two messages; events meanwhile are grouped "
                                      "into the next one.")
    notify_acknowledged: bool = Field(description="Keep notifying de-escalations of acknowledged alerts (and the "
                                      "acknowledgement itself); by default they are quiet until they escalate.")
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class StoredChannel:
    """A channel with its secrets, for the notifier only."""

    name: str
    type: str
    url: str
    secret: str | None
    min_severity: str
    types: tuple[str, ...] | None
    scopes: tuple[str, ...] | None
    min_interval_seconds: int
    notify_acknowledged: bool
    since_event_id: int
    created_at: str
    updated_at: str

    def answer(self) -> Channel:
        """The channel as answered, secrets masked."""
        return Channel(name=self.name, type=self.type, url=mask_url(self.url, self.type),  # type: ignore[arg-type]
                       secret_set=self.secret is not None, min_severity=self.min_severity,  # type: ignore[arg-type]
                       types=list(self.types) if self.types is not None else None,
                       scopes=list(self.scopes) if self.scopes is not None else None,
                       min_interval_seconds=self.min_interval_seconds, notify_acknowledged=self.notify_acknowledged,
                       created_at=dt.datetime.fromisoformat(self.created_at),
                       updated_at=dt.datetime.fromisoformat(self.updated_at))

    def matches(self, alert_type: str, scope: str, ids: Mapping[str, int | None]) -> bool:
        """Whether an alert of this type and scope passes the channel's type and scope filters.

        `ids` are the alert's `master`, `key` and `provider_key` ids: a `master:12` filter takes every
        alert of master 12, its keys' included.
        """
        if self.types is not None and alert_type not in self.types:
            return False
        if self.scopes is None:
            return True
        for wanted in self.scopes:
            kind, _, ident = wanted.partition(":")
            if (not ident and kind == scope) or (ident and ids.get(kind) == int(ident)):
                return True
        return False

    def secrets(self) -> list[str]:
        """What must never appear in a log line or an error message."""
        parts = urlsplit(self.url)
        # A Slack URL's path is the credential: receivers and proxies may echo it without the host.
        found = [self.url, parts.path] if self.type == "slack" and len(parts.path) > 1 else []
        found += [p for p in (parts.password, *(v for _, v in parse_qsl(parts.query))) if p and len(p) >= 4]
        return found + ([self.secret] if self.secret else [])


class ChannelStore:
    """The channels table (`notification_channels`)."""

    def __init__(self, store: ControlStore, now: Callable[[], dt.datetime], last_event_id: Callable[[], int],
                 box: Callable[[], SecretBox]) -> None:
        """`box`: what encrypts a channel's URL and secret at rest (a Slack URL is itself the secret)."""
        self.store = store
        self.now = now
        self.last_event_id = last_event_id
        self.box = box

    def all(self) -> list[StoredChannel]:
        """Every channel, by name."""
        with self.store.connect(write=False) as con:
            return [self._stored(r) for r in con.execute("SELECT * FROM notification_channels ORDER BY name")]

    def get(self, name: str) -> StoredChannel:
        """One channel. Raises NotFound."""
        with self.store.connect(write=False) as con:
            row = con.execute("SELECT * FROM notification_channels WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no notification channel named {name!r}")
        return self._stored(row)

    def reencrypt(self) -> int:
        """Encrypt every channel's URL and secret with the first key in force; returns how many channels."""
        box = self.box()
        with self.store.connect() as con:
            rows = con.execute("SELECT name, url, secret FROM notification_channels").fetchall()
            for row in rows:
                con.execute("UPDATE notification_channels SET url = ?, secret = ? WHERE name = ?",
                            (_text(box.rotate(_token(row["url"]))),
                             _text(box.rotate(_token(row["secret"]))) if row["secret"] else None,
                             row["name"]))
        return len(rows)

    def _stored(self, row: sqlite3.Row) -> StoredChannel:
        box = self.box()
        return _channel(row, box.decrypt(_token(row["url"])),
                        box.decrypt(_token(row["secret"])) if row["secret"] else None)

    def put(self, name: str, fields: Mapping[str, Any]) -> tuple[StoredChannel, bool]:
        """Create or replace a channel; returns it and whether it is new.

        `fields` are the PUT body's: `type`, `url` (required), `secret`, `min_severity`, `types`, `scopes`,
        `min_interval_seconds`, `notify_acknowledged`. Omitted optional fields take their defaults, except
        `secret`, which an update keeps unless the body names it (null removes it), and a `url` equal to the
        stored one's masked form, which keeps the stored URL, so a GET answer sent back as is changes nothing.
        A new channel receives the events recorded after it was created.

        Raises:
            InvalidParameter: a field out of its domain (named in the message).
        """
        check_name(name)
        unknown = set(fields) - {"type", "url", "secret", "min_severity", "types", "scopes", "min_interval_seconds",
                                 "notify_acknowledged"}
        if unknown:
            raise InvalidParameter(f"unknown channel field(s): {', '.join(sorted(unknown))}")
        stamp = iso(self.now())
        with self.store.connect() as con:
            # Read under this transaction's write lock: no event can be recorded between this read and the
            # commit, so every event after `since` is recorded after the channel exists (the notifier, which
            # reads events before channels, then always finds the channel of an event it reads).
            since = self.last_event_id()
            row = con.execute("SELECT * FROM notification_channels WHERE name = ?", (name,)).fetchone()
            old = self._stored(row) if row else None
            values = _validated(fields, old)
            box = self.box()
            con.execute(
                """
                INSERT INTO notification_channels (name, type, url, secret, min_severity, types, scopes,
                    min_interval_seconds, notify_acknowledged, since_event_id, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET type = excluded.type, url = excluded.url, secret = excluded.secret,
                    min_severity = excluded.min_severity, types = excluded.types, scopes = excluded.scopes,
                    min_interval_seconds = excluded.min_interval_seconds,
                    notify_acknowledged = excluded.notify_acknowledged, updated_at = excluded.updated_at
                """,
                (name, values["type"], _text(box.encrypt(values["url"])),
                 _text(box.encrypt(values["secret"])) if values["secret"] else None, values["min_severity"],
                 _json(values["types"]), _json(values["scopes"]), values["min_interval_seconds"],
                 int(values["notify_acknowledged"]), since, stamp, stamp),
            )
            stored = self._stored(con.execute("SELECT * FROM notification_channels WHERE name = ?",
                                              (name,)).fetchone())
        return stored, old is None

    def delete(self, name: str) -> None:
        """Delete a channel. Raises NotFound."""
        with self.store.connect() as con:
            if con.execute("DELETE FROM notification_channels WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no notification channel named {name!r}")


def check_name(name: str) -> None:
    """Raises InvalidParameter unless `name` is 1-64 letters, digits, `_`, `.` or `-` (a URL path segment)."""
    if not _NAME.match(name):
        raise InvalidParameter(f"channel name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")


def mask_url(url: str, channel_type: str) -> str:
    """A URL safe to show: password and query values masked; for Slack, everything after the first path segment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{MASK}@" if parts.username or parts.password else "") + host + (f":{parts.port}" if parts.port else "")
    path = parts.path
    if channel_type == "slack":
        first = path.strip("/").split("/")[0]
        path = f"/{first}/{MASK}" if first else f"/{MASK}"
    query = urlencode([(k, MASK) for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _validated(fields: Mapping[str, Any], old: StoredChannel | None) -> dict[str, Any]:
    kind = fields.get("type")
    if kind not in CHANNEL_TYPES:
        raise InvalidParameter(f"type: {kind!r} is not one of {', '.join(CHANNEL_TYPES)}")
    url = fields.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidParameter("url: required")
    if old is not None and url == mask_url(old.url, old.type):
        url = old.url  # a GET answer sent back: keep what is stored
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameter("url: must be an http:// or https:// URL with a host")
    secret = fields.get("secret", old.secret if old is not None else None)
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise InvalidParameter("secret: must be a non-empty string (or null to remove it)")
    if kind == "webhook" and secret is None:
        raise InvalidParameter("secret: a webhook channel signs every message and needs a secret")
    if kind == "slack" and secret is not None:
        raise InvalidParameter("secret: a slack channel has none (its URL is the secret)")
    severity = fields.get("min_severity") or "warning"
    if severity not in MIN_SEVERITIES:
        raise InvalidParameter(f"min_severity: {severity!r} is not one of {', '.join(MIN_SEVERITIES)}")
    interval = fields.get("min_interval_seconds") or 0
    if not isinstance(interval, int) or isinstance(interval, bool) or not 0 <= interval <= MAX_INTERVAL_SECONDS:
        raise InvalidParameter(f"min_interval_seconds: must be a whole number of seconds in 0..{MAX_INTERVAL_SECONDS}")
    acknowledged = fields.get("notify_acknowledged") or False
    if not isinstance(acknowledged, bool):
        raise InvalidParameter("notify_acknowledged: must be true or false")
    return {"type": kind, "url": url, "secret": secret, "min_severity": severity,
            "types": _types(fields.get("types")), "scopes": _scopes(fields.get("scopes")),
            "min_interval_seconds": interval, "notify_acknowledged": acknowledged}


def _types(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise InvalidParameter("types: a non-empty list of alert types, or null for every type")
    unknown = [t for t in value if t not in TYPES]
    if unknown:
        raise InvalidParameter(f"types: unknown alert type(s) {', '.join(unknown)}; use {', '.join(TYPES)}")
    return sorted(set(value))


def _scopes(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise InvalidParameter("scopes: a non-empty list of scopes, or null for every scope")
    for scope in value:
        match = _SCOPE.match(scope)
        if match is None or (match.group(1) == "global" and match.group(2)):
            raise InvalidParameter(f"scopes: {scope!r} is not a scope: use {', '.join(SCOPE_KINDS)}, or one "
                                   "entity as master:<id>, key:<id> or provider_key:<id>")
    return sorted(set(value))


def _json(value: list[str] | None) -> str | None:
    return None if value is None else json.dumps(value)


def _channel(row: sqlite3.Row, url: str, secret: str | None) -> StoredChannel:
    return StoredChannel(
        name=row["name"], type=row["type"], url=url, secret=secret, min_severity=row["min_severity"],
        types=tuple(json.loads(row["types"])) if row["types"] else None,
        scopes=tuple(json.loads(row["scopes"])) if row["scopes"] else None,
        min_interval_seconds=row["min_interval_seconds"], notify_acknowledged=bool(row["notify_acknowledged"]),
        since_event_id=row["since_event_id"], created_at=row["created_at"], updated_at=row["updated_at"],
    )


def _text(token: bytes) -> str:
    """A Fernet token (ASCII) as the text its TEXT column holds on every database."""
    return token.decode("ascii")


def _token(value: str | bytes) -> bytes:
    """A stored token back as bytes (channels stored before tokens were kept as text hold bytes)."""
    return value.encode("ascii") if isinstance(value, str) else value
