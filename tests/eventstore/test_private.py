"""Private homes: created private, tightened once when an earlier version left them readable."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.private import secure_home


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


PASSAGE = 0o710 if os.geteuid() == 0 else 0o700


def test_a_new_home_is_private_and_so_is_what_is_created_in_it(tmp_path: Path) -> None:
    os.umask(0o022)
    home = tmp_path / "new" / "home"
    assert secure_home(home) == 0
    assert _mode(home) == 0o700
    (home / "lake").mkdir()
    (home / "lake" / "x.parquet").write_bytes(b"PAR1")
    assert _mode(home / "lake") == 0o700 and _mode(home / "lake" / "x.parquet") == 0o600


def test_a_loose_home_is_tightened_once_and_postgres_keeps_its_own_modes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "lake" / "data").mkdir(parents=True)
    (home / "postgres").mkdir()
    (home / "postgres" / "postgresql.conf").write_text("")
    (home / "lake" / "data" / "a.parquet").write_bytes(b"PAR1")
    (home / "link").symlink_to("/etc/hostname")
    for path in (home, home / "lake", home / "lake" / "data"):
        path.chmod(0o755)
    (home / "lake" / "data" / "a.parquet").chmod(0o644)
    (home / "postgres").chmod(0o750)
    (home / "postgres" / "postgresql.conf").chmod(0o640)
    target = _mode(Path("/etc/hostname"))

    assert secure_home(home) == 4  # the home, lake, lake/data and the Parquet file
    assert _mode(home) == PASSAGE
    assert _mode(home / "lake") == 0o700 and _mode(home / "lake" / "data") == 0o700
    assert _mode(home / "lake" / "data" / "a.parquet") == 0o600
    assert _mode(home / "postgres") == 0o750 and _mode(home / "postgres" / "postgresql.conf") == 0o640
    assert _mode(Path("/etc/hostname")) == target, "a symbolic link's target is not the home's"
    assert secure_home(home) == 0
