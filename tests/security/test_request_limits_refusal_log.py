"""Issue 7 item 12 (part): refused requests cannot flood the log (one INFO line per interval, with a count)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from opensage.server import routes
from tests.security.test_request_limits_body import RUNTIME, make_app


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(routes, "_refusals", routes.ThrottledLog(routes.log, 10.0, clock=clock))
    return clock


def _send_unsigned(n: int, path: str = "/") -> list[int]:
    app, _ = make_app()

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return [(await c.post(path, headers={"X-Amz-Target": "SageMaker.ListModels"}, content=b"{}")).status_code
                    for _ in range(n)]

    return asyncio.run(go())


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == routes.log.name and r.levelno == logging.INFO]


def test_unauthenticated_requests_log_one_line_per_interval_with_a_count(caplog, clock):
    caplog.set_level(logging.INFO, logger=routes.log.name)
    assert _send_unsigned(50) == [403] * 50
    assert len(_lines(caplog)) == 1 and "MissingAuthenticationTokenException" in _lines(caplog)[0]
    clock.now += 10.5
    assert _send_unsigned(1, RUNTIME) == [403]
    lines = _lines(caplog)
    assert len(lines) == 2 and "49 more refused requests" in lines[1]
    clock.now += 10.5
    _send_unsigned(1)
    assert "more refused" not in _lines(caplog)[2]  # the count starts again


def test_server_errors_are_not_throttled(caplog, clock):
    caplog.set_level(logging.INFO, logger=routes.log.name)
    from opensage.api.dispatch import RequestContext
    from opensage.errors import InternalFailure

    for _ in range(3):
        routes._error(InternalFailure("boom"), RequestContext(), "json")
    assert len(_lines(caplog)) == 3
