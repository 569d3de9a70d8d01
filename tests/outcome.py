"""A test's outcome, readable by its fixtures' teardown (tests/conftest.py records it)."""

from __future__ import annotations

import pytest

CALL_FAILED = pytest.StashKey[bool]()  # the test's call phase failed
