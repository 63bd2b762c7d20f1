"""Every ```python block of README.md runs (in order, in one namespace)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text):
  return [m.group(1) for m in _BLOCK.finditer(text)]


def test_block_extraction():
  text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a + 1\n```\n"
  assert python_blocks(text) == ["a = 1\n", "b = a + 1\n"]


def test_readme_python_blocks_run():
  # A missing README (or one without examples) is a failure, not a skip.
  assert README.is_file(), f"{README} does not exist"
  text = README.read_text(encoding="utf-8")
  blocks = python_blocks(text)
  assert blocks, f"{README} has no ```python blocks"
  namespace = {"__name__": "readme"}
  for i, block in enumerate(blocks):
    line = text.count("\n", 0, text.find(block)) + 1
    code = compile(block, f"README.md (block {i}, line {line})", "exec")
    exec(code, namespace)  # noqa: S102
