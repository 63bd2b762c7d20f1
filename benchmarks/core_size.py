"""The size of jaxrnn's core: lines and code lines per module.

``python -m benchmarks.core_size [ROOT]`` counts the modules of the core
(``jaxrnn/_src/cells``, ``engine``, ``layers``, ``base.py`` and
``checks.py``) under ROOT (default: the working tree). A code line is a
line that is not blank, not a comment and not part of a docstring.
"""

import ast
import pathlib
import sys

CORE = ("jaxrnn/_src/cells", "jaxrnn/_src/engine", "jaxrnn/_src/layers",
        "jaxrnn/_src/base.py", "jaxrnn/_src/checks.py")


def count(path: pathlib.Path) -> tuple[int, int]:
  """``(lines, code lines)`` of one Python file."""
  source = path.read_text()
  docstrings = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      first = node.body[0] if node.body else None
      if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
          and isinstance(first.value.value, str)):
        docstrings.update(range(first.lineno, first.end_lineno + 1))
  lines = source.splitlines()
  code = sum(1 for number, line in enumerate(lines, 1)
             if line.strip() and not line.strip().startswith("#")
             and number not in docstrings)
  return len(lines), code


def main(root: str = ".") -> None:
  files = []
  for entry in CORE:
    path = pathlib.Path(root, entry)
    files += sorted(path.glob("*.py")) if path.is_dir() else [path]
  total_lines = total_code = 0
  for path in files:
    lines, code = count(path)
    total_lines, total_code = total_lines + lines, total_code + code
    print(f"{code:6d} {lines:6d}  {path.relative_to(root)}")
  print(f"{total_code:6d} {total_lines:6d}  core (code lines, lines)")


if __name__ == "__main__":
  main(*sys.argv[1:])
