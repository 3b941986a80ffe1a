"""The test tree has no __init__.py files, so pytest imports each test module by its basename:
two test files with the same name in different folders break collection of the whole suite."""

from collections import Counter
from pathlib import Path


def test_test_file_basenames_are_unique():
    names = Counter(p.name for p in Path(__file__).resolve().parent.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
