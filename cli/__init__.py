"""The `ezstats` command line, beside `api/`: each command parses argv, calls one engine method and prints.

`cli.root` holds the root app, `cli.common` and `cli.output` what commands share, `cli.errors` the one
error handler; each command module imports only those (never another command module); `cli.main`
registers them all.
"""

from cli.main import app, main

__all__ = ["app", "main"]
