"""Every Python example of docs/projections.md runs (unless it starts with ``# not-run: <reason>``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "projections.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int) -> None:
    source = BLOCKS[index]
    if source.startswith("# not-run:"):
        pytest.skip(source.splitlines()[0])
    exec(compile(source, f"{DOC.name} example {index + 1}", "exec"), {"__name__": f"doc_example_{index}"})
