"""A real SeaweedFS S3 gateway, started once per test module, always stopped (even on failure)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opensage.objects.seaweed import SeaweedServer

ACCESS_KEY = "OPENSAGETESTKEY"
SECRET_KEY = "opensage-test-secret-0123456789"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), 0, ACCESS_KEY, SECRET_KEY)
    try:
        server.start()
        server.wait_ready(timeout=60)
        yield server
    finally:
        server.stop(grace_seconds=2)
