"""/admin/notifications: channels (Alertmanager, webhooks, Slack), their test, and the delivery outbox."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from api.deps import AdminAuth, EngineDep
from api.schemas import ChannelBody, Int64
from engine.notifications import ChannelTest
from engine.notifications.channels import CHANNEL_NAME, Channel
from engine.notifications.deliveries import Delivery, DeliveryPage
from engine.notifications.service import RetryCount

router = APIRouter(prefix="/admin/notifications", tags=["notifications"], dependencies=[AdminAuth])

#: A channel's name, as the store accepts it (a URL path segment).
ChannelName = Annotated[str, Path(pattern=CHANNEL_NAME, description="1-64 letters, digits, '_', '.' or '-'.")]

_ERRORS: dict[int | str, dict[str, Any]] = {401: {}, 404: {}, 422: {}}


@router.get("/channels", responses={401: {}})
def read_channels(engine: EngineDep) -> list[Channel]:
    """Every notification channel, secrets masked."""
    return engine.notifications.list_channels()


@router.get("/channels/{name}", responses=_ERRORS)
def read_channel(engine: EngineDep, name: ChannelName) -> Channel:
    """One channel, secrets masked."""
    return engine.notifications.get_channel(name)


@router.put("/channels/{name}", responses=_ERRORS)
def update_channel(engine: EngineDep, name: ChannelName, body: ChannelBody) -> Channel:
    """Create or replace a channel; it receives the alert events recorded from now on."""
    return engine.notifications.put_channel(name, body.model_dump(exclude_unset=True))


@router.delete("/channels/{name}", status_code=204, responses=_ERRORS)
def delete_channel(engine: EngineDep, name: ChannelName) -> Response:
    """Delete a channel; its queued and dead-lettered deliveries are cancelled."""
    engine.notifications.delete_channel(name)
    return Response(status_code=204)


@router.post("/channels/{name}/test", responses=_ERRORS)
def test_channel(engine: EngineDep, name: ChannelName) -> ChannelTest:
    """Send the channel a synthetic alert now and answer what its receiver said (`ok` false when it failed)."""
    return engine.notifications.test_channel(name)


@router.get("/deliveries", responses=_ERRORS)
def read_deliveries(
    engine: EngineDep,
    status: Literal["pending", "delivered", "dead", "cancelled"] | None = None,
    channel: str | None = None,
    alert_id: Int64 | None = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeliveryPage:
    """Deliveries, newest first; `status=dead` lists the dead letters."""
    return engine.notifications.deliveries(status, channel, alert_id, cursor, limit)


@router.post("/deliveries/retry", responses=_ERRORS)
def retry_dead_deliveries(
    engine: EngineDep, channel: Annotated[str | None, Query(description="Only this channel's.")] = None,
) -> RetryCount:
    """Re-drive every dead delivery (of one channel, or of all): the next notifier run sends them, in order."""
    return engine.notifications.retry_dead(channel)


@router.get("/deliveries/{delivery_id}", responses=_ERRORS)
def read_delivery(engine: EngineDep, delivery_id: Int64) -> Delivery:
    """One delivery with every attempt (status code, latency, error)."""
    return engine.notifications.delivery(delivery_id)


@router.post("/deliveries/{delivery_id}/retry", responses={401: {}, 404: {}, 409: {}})
def retry_delivery(engine: EngineDep, delivery_id: Int64) -> Delivery:
    """Re-drive a dead delivery with a fresh set of attempts (or make a pending one due now); 409 once delivered."""
    return engine.notifications.retry(delivery_id)
