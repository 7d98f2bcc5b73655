"""The `ezstats` command line: each command parses argv, calls one engine method and prints."""

from engine.cli.main import app

__all__ = ["app"]
