"""The examples run against a real `opensage up`: reuse the end-to-end suite's platform fixture."""

from tests.e2e.conftest import platform  # noqa: F401
