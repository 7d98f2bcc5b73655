"""ezstats HTTP API: translates HTTP into engine calls and back."""
