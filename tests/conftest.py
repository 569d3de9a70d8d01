"""Fixtures shared by every test suite under tests/."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.outcome import CALL_FAILED


@pytest.fixture(autouse=True)
def _hermetic_ferry_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FERRY_* variable of the developer's shell leaks into a test; tests set their own."""
    for key in list(os.environ):
        if key.startswith("FERRY_"):
            monkeypatch.delenv(key)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Whether the test's call failed, for fixtures that keep evidence of a failure (the
    dashboard's screenshot and browser log)."""
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report
