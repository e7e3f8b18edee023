"""Rooms with one job: no application module grows past 400 lines."""

from __future__ import annotations

from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
LIMIT = 400


def test_no_module_in_app_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(APP)): len(path.read_text().splitlines()) for path in APP.rglob("*.py")
    }
    assert len(sizes) > 20
    # The copy's package is held to the same rule as every other module.
    assert any(name.startswith("db/transfer/") for name in sizes)
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}
