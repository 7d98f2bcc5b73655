"""Telling the gateway a credential changed: Redis Pub/Sub `dp:config:refresh` (the EZ-API control-plane
contract), or a signed webhook when there is no Redis.

The message is `{"resource": "provider_credentials", "version": "<credential version>", "timestamp": <unix
seconds>, "provider_key_id": N, "provider_type": "..."}`: no secret, only what to fetch again (the gateway
reads the token with GET /admin/credentials/{id}/token). A webhook carries `X-Ezstats-Timestamp` and
`X-Ezstats-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` when EZ_CREDENTIALS_WEBHOOK_SECRET
is set. A notice that cannot be delivered is logged: the tokens are stored already, and the gateway still
reads them on its next poll.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging

import httpx

from engine.credentials.events import redis_client
from engine.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "dp:config:refresh"
RESOURCE = "provider_credentials"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The webhook signature header value of a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


class Notifier:
    """Publishes credential changes where the settings say."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def target(self) -> str | None:
        """Where notices go: `redis`, `webhook` or None."""
        if self.settings.redis_url:
            return "redis"
        return "webhook" if self.settings.credentials_webhook_url else None

    def changed(self, provider_key_id: int, provider_type: str, version: int, now: dt.datetime) -> bool:
        """Announce a credential's new version; whether the notice was delivered (False also when no target)."""
        timestamp = int(now.timestamp())
        message = {"resource": RESOURCE, "version": str(version), "timestamp": timestamp,
                   "provider_key_id": provider_key_id, "provider_type": provider_type}
        body = json.dumps(message, separators=(",", ":")).encode()
        try:
            if self.target == "redis":
                assert self.settings.redis_url
                client = redis_client(self.settings.redis_url)
                try:
                    client.publish(CHANNEL, body)
                finally:
                    client.close()
                return True
            if self.target == "webhook":
                assert self.settings.credentials_webhook_url
                headers = {"Content-Type": "application/json", "X-Ezstats-Timestamp": str(timestamp)}
                if self.settings.credentials_webhook_secret is not None:
                    secret = self.settings.credentials_webhook_secret.get_secret_value()
                    headers["X-Ezstats-Signature"] = signature(secret, timestamp, body)
                response = httpx.post(self.settings.credentials_webhook_url, content=body, headers=headers,
                                      timeout=self.settings.oauth_timeout_seconds)
                response.raise_for_status()
                return True
        except Exception as exc:  # a lost notice must not undo a stored refresh
            log.warning("credential change of provider key %d not announced (%s): %s: %s", provider_key_id,
                        self.target, type(exc).__name__, exc)
        return False
