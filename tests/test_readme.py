"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), namespace)
    if "loss" in namespace:
        assert namespace["loss"].ndim == 0 and 0 <= namespace["loss"].item() <= 1
    if "scores" in namespace:
        assert namespace["scores"].min() > 0.8


def test_readme_opens_with_the_two_setup_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    assert first_block[0].endswith("metricopt") and first_block[1].endswith("pytest")


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "constrained.md"


def test_the_constrained_metrics_guide_runs_as_one_session() -> None:
    # its blocks build on each other (a reader's session), so they run in one namespace, in order
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/guides/constrained.md example {index}", "exec"), namespace)
    assert namespace["clf"].calibration_ is not None
