"""How sizes read for people: the one formatter of byte counts (CLI lines, the report page)."""

from __future__ import annotations

__all__ = ["human_bytes"]


def human_bytes(size: int | None) -> str:
    """``1536`` → ``1.5 KiB``; ``None`` (not measured, e.g. object storage) → ``unknown``."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
