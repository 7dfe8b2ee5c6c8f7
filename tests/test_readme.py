"""Every python block of README.md and of the markdown pages in docs/ runs as written (docs are
tests), and the README stays a short front door."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (page.relative_to(ROOT).as_posix(), i, block)
    for page in PAGES
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
]


def test_readme_has_python_blocks():
    assert sum(name == "README.md" for name, _, _ in BLOCKS) >= 3


def test_readme_is_a_short_front_door_that_links_its_pages():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        assert (ROOT / link).exists(), link


@pytest.mark.parametrize(("page", "index", "block"), BLOCKS, ids=[f"{p}-{i}" for p, i, _ in BLOCKS])
def test_readme_block_runs_as_written(page, index, block, capsys):
    exec(compile(block, f"{page} block {index}", "exec"), {"__name__": "readme"})
