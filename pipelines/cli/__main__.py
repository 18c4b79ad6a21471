"""``python -m pipelines.cli``: the same command line as ``projectionist`` (no commands here)."""

from pipelines.cli import main

main()
