"""Starting ezstats processes for the credential tests, with the fake OAuth server's settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.oauth_server import FakeOAuth

ROOT = Path(__file__).resolve().parents[1]


def environment(data: Path, oauth: FakeOAuth, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EZ_DATA_DIR": str(data), "EZ_OAUTH_TIMEOUT_SECONDS": "5",
           "EZ_LOG_LEVEL": "WARNING"}
    env.update({f"EZ_{k.upper()}": str(v) for k, v in oauth.settings().items()})
    env.update(extra)
    return env


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
