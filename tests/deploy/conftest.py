"""The deploy stages' tests (``-m compose``, ``-m netns``): they print what they measured."""

from __future__ import annotations

import json

# filled by the tests: a name per stage, the figures it measured
FIGURES: dict[str, dict] = {}


def pytest_terminal_summary(terminalreporter):
    for stage, figures in FIGURES.items():
        if figures:
            terminalreporter.write_line(f"{stage} figures: {json.dumps(figures)}")
