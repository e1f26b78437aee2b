"""Shared fixtures: settings, the Pinterest sandbox, apps behind the middleware.

Topic-specific helpers live beside the tests that use them (`*_support.py`); only fixtures many
test files share are here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.middleware_support import Rig
from tracklayer_mw import Settings

SECRET = "test-secret-key-0123456789abcdef"
AD_ACCOUNT = "549755885175"
TOKEN = "sandbox-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def make_settings(tmp_path: Any) -> Callable[..., Settings]:
    """Settings for tests: credentials for the sandbox, an outbox in tmp_path; override anything."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "secret_key": SECRET,
            "pinterest_ad_account_id": AD_ACCOUNT,
            "pinterest_access_token": TOKEN,
            "pinterest_api_base": "http://pinterest.sandbox/v5",
            "outbox": f"sqlite:///{tmp_path / 'outbox.sqlite3'}",
        }
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Rig]:
    """Engines on a fake clock delivering to one checked sandbox; everything queued must drain."""
    rig = Rig(make_settings, tmp_path)
    yield rig
    rig.close()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright launches Debian's chromium: Playwright cannot download its own here."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM}
