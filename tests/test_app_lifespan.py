"""The served app's lifetime: what it builds at start-up is kept out of the cyclic collector while it serves."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from api.app import create_app
from engine import Engine


def test_serving_freezes_what_start_up_built_and_thaws_it_at_shutdown(engine: Engine):
    gc.unfreeze()
    with TestClient(create_app(engine=engine, scheduler=False)) as client:
        assert client.get("/healthz").status_code == 200
        frozen = gc.get_freeze_count()
        # The engine and the app are among the frozen objects: a full collection does not walk them.
        assert frozen > 10_000
        assert gc.is_tracked(engine) and not any(obj is engine for obj in gc.get_objects())
    assert gc.get_freeze_count() == 0  # an app made and dropped leaves nothing uncollectable
    assert any(obj is engine for obj in gc.get_objects())
