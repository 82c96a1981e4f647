"""Capabilities install themselves through opensage/capabilities: every module's install(ctx), in name order."""

from __future__ import annotations

import sys

import opensage.capabilities as capabilities
from opensage.capabilities import CapabilityContext, install_all


def test_install_all_calls_each_module_install_in_name_order(tmp_path, monkeypatch):
    for name in ("zz_second", "zy_first"):
        (tmp_path / f"{name}.py").write_text(
            "def install(ctx):\n"
            f"    ctx.services.setdefault('order', []).append({name!r})\n")
    (tmp_path / "zz_helper.py").write_text("VALUE = 1\n")  # no install(): a helper module, skipped
    monkeypatch.setattr(capabilities, "__path__", [str(tmp_path)])  # only the probes: real ones need a platform
    ctx = CapabilityContext(deps=None, dispatcher=None, executor=None, store_spec=None,  # type: ignore[arg-type]
                            credentials=None, services={})
    try:
        install_all(ctx)
    finally:
        for name in ("zz_second", "zy_first", "zz_helper"):
            sys.modules.pop(f"opensage.capabilities.{name}", None)
    assert ctx.services["order"] == ["zy_first", "zz_second"]
