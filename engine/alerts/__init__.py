"""Alerts: detection rules over the lake, their lifecycle in the control-plane store, thresholds, backtest."""

from engine.alerts.service import Alerts, Detection, Preview

__all__ = ["Alerts", "Detection", "Preview"]
