"""Alert notifications: channels (Alertmanager, webhooks, Slack), the durable outbox, the notifier."""

from engine.notifications.service import ChannelTest, Notifications

__all__ = ["ChannelTest", "Notifications"]
