"""docs/own-model-and-data.md runs: its code blocks, in order, in an empty directory.

A block whose info string has ``title="NAME"`` is written to the file NAME (the tutorial's own
modules and YAML files); every other ``python`` block is executed, all in one namespace.
"""

import re
import sys
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
TUTORIAL = ROOT / "docs" / "own-model-and-data.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.S | re.M)


def blocks(text):
    """``(language, file name or None, code)`` of every fenced block, in order."""
    for language, info, code in BLOCK.findall(text):
        title = re.search(r'title="([^"]+)"', info)
        yield language, title.group(1) if title else None, code


def test_the_tutorial_has_files_and_code_to_run():
    found = list(blocks(TUTORIAL.read_text(encoding="utf-8")))
    assert {name for _, name, _ in found if name} >= {"my_backbones.py", "my_data.py", "own.yaml"}
    assert sum(1 for language, name, _ in found if language == "python" and not name) >= 8


def test_every_code_block_of_the_tutorial_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the tutorial's modules, for sweep workers too
    namespace = {"__name__": "tutorial"}
    try:
        for index, (language, name, code) in enumerate(blocks(TUTORIAL.read_text("utf-8"))):
            if name is not None:
                (tmp_path / name).write_text(code, encoding="utf-8")
            elif language == "python":
                exec(compile(code, f"{TUTORIAL.name} block {index}", "exec"), namespace)
    finally:
        for module in ("my_backbones", "my_data"):
            sys.modules.pop(module, None)
