"""ezstats engine: the lake, its SQL and everything computed from it, as a library."""

from engine.facade import Engine
from engine.settings import Settings, get_settings

__all__ = ["Engine", "Settings", "get_settings"]
