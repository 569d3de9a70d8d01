"""Fixtures shared by every test suite under tests/."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _hermetic_ferry_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FERRY_* variable of the developer's shell leaks into a test; tests set their own."""
    for key in list(os.environ):
        if key.startswith("FERRY_"):
            monkeypatch.delenv(key)
