"""Runs the ```python blocks of Markdown files, checking what they print.

A block whose first line starts with ``>>>`` is a doctest: its examples run
and their output is compared with the output shown (``NORMALIZE_WHITESPACE``
and ``ELLIPSIS``, as the docstrings' doctests). Any other block is plain
code, run as it is, and must not call ``print``: a printed claim belongs in
a doctest block, where it is checked. The blocks of one file run in order in
one namespace, so a later block may use what an earlier one defined.

``python tests/doc_blocks.py FILE.md ...`` runs files and exits non-zero on
a failure. It needs only the standard library (and what the blocks import),
so it also runs README.md against an installed wheel (``make wheel-check``).
"""

import ast
import doctest
import pathlib
import re
import sys
from typing import NamedTuple, Optional

_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


class Block(NamedTuple):
  text: str
  line: int  # the line of the file where the code starts (1-based)
  is_doctest: bool


def python_blocks(text: str) -> list[Block]:
  """The ```python blocks of a Markdown text, in order."""
  blocks = []
  for match in _BLOCK.finditer(text):
    code = match.group(1)
    line = text.count("\n", 0, match.start(1)) + 1
    blocks.append(Block(code, line, code.lstrip().startswith(">>>")))
  return blocks


def _calls_print(code: str) -> bool:
  try:
    tree = ast.parse(code)
  except SyntaxError:
    return False  # reported when the block runs
  return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id == "print" for node in ast.walk(tree))


class BlockFailed(AssertionError):
  """A block raised, printed where it may not, or showed the wrong output."""


def run_file(path: "str | pathlib.Path", namespace: Optional[dict] = None) -> tuple[int, int]:
  """Runs every ```python block of ``path``; returns (blocks, doctest examples).

  Raises:
    BlockFailed: naming the file and line of the first block that failed.
  """
  path = pathlib.Path(path)
  text = path.read_text(encoding="utf-8")
  namespace = {"__name__": path.stem} if namespace is None else namespace
  parser = doctest.DocTestParser()
  blocks, examples = python_blocks(text), 0
  for block in blocks:
    where = f"{path}, line {block.line}"
    if not block.is_doctest:
      if _calls_print(block.text):
        raise BlockFailed(
            f"{where}: the block prints; write it as a doctest (>>> lines followed "
            "by the output) so that the output shown is checked")
      try:
        # Leading newlines make tracebacks give the Markdown file's line numbers.
        exec(compile("\n" * (block.line - 1) + block.text, str(path), "exec"),  # noqa: S102
             namespace)
      except Exception as err:
        raise BlockFailed(f"{where}: {type(err).__name__}: {err}") from err
      continue
    test = parser.get_doctest(block.text, namespace, f"{path.name}:{block.line}",
                              str(path), block.line - 1)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS | doctest.REPORT_ONLY_FIRST_FAILURE)
    result = runner.run(test, out=report.append, clear_globs=False)
    namespace.update(test.globs)
    examples += result.attempted
    if result.failed:
      raise BlockFailed(f"{where}: {result.failed} of {result.attempted} examples "
                        "failed\n" + "".join(report))
  return len(blocks), examples


def main(argv: list[str]) -> int:
  failed = 0
  for name in argv:
    try:
      blocks, examples = run_file(name)
    except BlockFailed as err:
      print(err, file=sys.stderr)
      failed += 1
    else:
      print(f"{name}: {blocks} python blocks ran, {examples} doctest examples passed")
  return 1 if failed or not argv else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
