"""`opensage up` flags reach Settings (issue 13): --ray-capacity-wait is OPENSAGE_RAY_CAPACITY_WAIT_SECONDS."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from opensage.cli import main as cli
from opensage.settings import Settings


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Stops `up` where it would start serving, keeping the Settings it built (--s3-endpoint: no SeaweedFS)."""
    seen: dict = {}

    def capture(settings, lock, authority, health=None) -> None:  # noqa: ANN001
        import os

        seen["settings"] = settings
        seen["env"] = os.environ.get("OPENSAGE_RAY_CAPACITY_WAIT_SECONDS")

    monkeypatch.setattr(cli, "_serve", capture)
    # setenv first: its undo removes the variable `up` sets, which a bare delenv of a missing one would not.
    monkeypatch.setenv("OPENSAGE_RAY_CAPACITY_WAIT_SECONDS", "")
    monkeypatch.delenv("OPENSAGE_RAY_CAPACITY_WAIT_SECONDS")
    return seen


def test_up_ray_capacity_wait_option_sets_setting(tmp_path: Path, served: dict,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)  # CliRunner runs in this test's process
    result = CliRunner().invoke(cli.main, ["up", "--home", str(tmp_path / "home"), "--s3-endpoint",
                                           "http://127.0.0.1:9", "--ray-capacity-wait", "42"])
    assert result.exit_code == 0, result.output
    assert served["settings"].ray_capacity_wait_seconds == 42.0
    assert served["env"] is None  # cli/ray_executor.py reads the setting, not a process-wide variable


def test_up_ray_capacity_wait_negative_is_refused(tmp_path: Path, served: dict) -> None:
    result = CliRunner().invoke(cli.main, ["up", "--home", str(tmp_path / "home"), "--ray-capacity-wait", "-1"])
    assert result.exit_code == 2
    assert "--ray-capacity-wait" in result.output and "No such option" not in result.output
    assert "settings" not in served


def test_settings_ray_capacity_wait_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSAGE_RAY_CAPACITY_WAIT_SECONDS", "7.5")
    assert Settings.build(tmp_path).ray_capacity_wait_seconds == 7.5
    monkeypatch.delenv("OPENSAGE_RAY_CAPACITY_WAIT_SECONDS")
    assert Settings.build(tmp_path).ray_capacity_wait_seconds is None


@pytest.mark.parametrize(("name", "raw"), [("OPENSAGE_MODEL_CACHE_IDLE_SECONDS", "an hour"),
                                           ("OPENSAGE_SERVERLESS_IDLE_SECONDS", "-5"),
                                           ("OPENSAGE_PORT", "80.5")])
def test_up_malformed_numeric_setting_is_a_clear_error_not_a_traceback(tmp_path: Path, served: dict, name: str,
                                                                        raw: str, monkeypatch: pytest.MonkeyPatch
                                                                        ) -> None:
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setenv(name, raw)
    result = CliRunner().invoke(cli.main, ["up", "--home", str(tmp_path / "home"), "--s3-endpoint",
                                           "http://127.0.0.1:9"])
    assert result.exit_code == 1, result.output
    assert f"Error: {name}={raw!r} is not usable" in result.output
    assert "Traceback" not in result.output and "settings" not in served


def test_settings_model_cache_idle_seconds_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.build(tmp_path).model_cache_idle_seconds == 3600
    monkeypatch.setenv("OPENSAGE_MODEL_CACHE_IDLE_SECONDS", "0")
    assert Settings.build(tmp_path).model_cache_idle_seconds == 0
