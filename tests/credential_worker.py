"""A process for the credential tests: `python -m tests.credential_worker MODE PROVIDER_KEY_ID [N]`.

Settings come from the environment (EZ_DATA_DIR, EZ_OAUTH_*). Modes:
- `loop`: refresh the credential N times in a row, printing each outcome (two of these race on one token);
- `once`: print `ready`, then refresh once (the test SIGKILLs it while the provider holds its answer);
- `die-draining`: take one Redis event and die (SIGKILL itself) before acking it.
"""

from __future__ import annotations

import os
import signal
import sys

from engine import Engine, get_settings


def main() -> None:
    mode, key = sys.argv[1], int(sys.argv[2])
    engine = Engine(get_settings())
    if mode == "loop":
        for _ in range(int(sys.argv[3])):
            print(engine.credentials.refresh(key, "schedule"), flush=True)
    elif mode == "once":
        print("ready", flush=True)
        print(engine.credentials.refresh(key, "schedule"), flush=True)
    elif mode == "die-draining":
        assert engine.credentials.events is not None
        engine.credentials.events.drain(lambda _: os.kill(os.getpid(), signal.SIGKILL))


if __name__ == "__main__":
    main()
