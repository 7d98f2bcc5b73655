"""Alerts: detection rules over the lake, their lifecycle in the control-plane store, thresholds, backtest."""

from engine.alerts.previews import Preview, PreviewRun
from engine.alerts.service import Alerts, Detection

__all__ = ["Alerts", "Detection", "Preview", "PreviewRun"]
