"""Debian's Chromium for the tests that look at rendered pages, driven by the playwright package.

Never `playwright install` (no browser download here): .ci/run installs Debian's `chromium`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, offline: nothing of Chromium's own reaches for the network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def launch(playwright: Any) -> Any:
    """A headless Debian Chromium from ``sync_playwright()``; the test fails (never skips) when it is missing."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it): the page check cannot run")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
