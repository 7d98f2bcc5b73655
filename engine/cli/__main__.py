"""`python -m engine.cli` runs the CLI, as the `ezstats` script does."""

from engine.cli import app

app()
