"""`python -m cli` runs the CLI, as the `ezstats` script does."""

from cli.main import main

main()
