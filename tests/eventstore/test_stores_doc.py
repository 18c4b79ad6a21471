"""Every runnable example of docs/stores.md runs against an empty database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "stores.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_examples() -> None:
    assert len([b for b in BLOCKS if not b.startswith("# not-run:")]) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int, fresh_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    block = BLOCKS[index]
    if block.startswith("# not-run:"):
        pytest.skip(block.splitlines()[0])
    monkeypatch.setenv("PROJECTIONIST_EVENT_STORE_DSN", fresh_database)
    exec(compile(block, f"{DOC}:block{index}", "exec"), {"__name__": f"docs_stores_{index}"})
