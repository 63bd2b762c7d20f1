"""The documentation: README.md and the site's pages in docs/.

Every ```python block runs, in order, one namespace per file; a block written
as a doctest (``>>>``) must print exactly what it shows (see doc_blocks.py).
"""

import ast
import doctest
import json
import pathlib
import re

import pytest

import doc_blocks
import jaxrnn
import jaxrnn.interop

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README] + sorted(DOCS.glob("*.md"))


def write(tmp_path, text):
  path = tmp_path / "page.md"
  path.write_text(text, encoding="utf-8")
  return path


def test_block_extraction():
  text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\n>>> a + 1\n2\n```\n"
  assert doc_blocks.python_blocks(text) == [
      doc_blocks.Block("a = 1\n", 3, False), doc_blocks.Block(">>> a + 1\n2\n", 9, True)]


def test_blocks_share_a_namespace_and_output_is_compared(tmp_path):
  page = write(tmp_path, "```python\nx = 20\n```\n\n```python\n>>> print(x + 1)\n21\n```\n")
  assert doc_blocks.run_file(page) == (2, 1)
  wrong = write(tmp_path, "```python\n>>> print(2 + 2)\n5\n```\n")
  with pytest.raises(doc_blocks.BlockFailed, match=r"(?s)page\.md, line 2: 1 of 1 "
                     r"examples failed.*Expected:\s+5\s+Got:\s+4"):
    doc_blocks.run_file(wrong)


def test_a_plain_block_may_not_print(tmp_path):
  page = write(tmp_path, "text\n\n```python\nx = 1\nprint(x)   # 1\n```\n")
  with pytest.raises(doc_blocks.BlockFailed, match=r"page\.md, line 4: the block prints"):
    doc_blocks.run_file(page)


def test_a_failing_block_names_its_line(tmp_path):
  page = write(tmp_path, "```python\nx = 1\n```\n\n```python\ny = x +\n```\n")
  with pytest.raises(doc_blocks.BlockFailed, match=r"page\.md, line 6: SyntaxError"):
    doc_blocks.run_file(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_code_runs_and_prints_what_it_shows(page):
  doc_blocks.run_file(page)


def test_readme_is_short_and_its_example_is_checked():
  text = README.read_text(encoding="utf-8")
  assert len(text.splitlines()) <= 250
  assert "make test" in text and "make demo" in text
  blocks = doc_blocks.python_blocks(text)
  # The quick example is a doctest, and the README's code needs nothing
  # but jaxrnn's own dependencies (make wheel-check runs it that way).
  assert blocks and all(b.is_doctest for b in blocks)
  imported = set()
  for block in blocks:
    for example in doctest.DocTestParser().get_examples(block.text):
      for node in ast.walk(ast.parse(example.source)):
        if isinstance(node, ast.Import):
          imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
          imported.add(node.module.split(".")[0])
  assert imported and imported <= {"jax", "jaxrnn", "numpy"}, imported


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(page):
  text = page.read_text(encoding="utf-8")
  for target in re.findall(r"\]\(([^)\s]+)\)", text):
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
      continue
    path = (page.parent / target.split("#")[0]).resolve()
    # Pages written alongside this one may not exist yet; the site's build
    # (mkdocs build --strict) fails on a missing page as well.
    if path.name in ("two_d.md", "frameworks.md"):
      continue
    assert path.exists(), f"{page.name}: link to {target} points at no file"


def test_api_reference_lists_every_public_name():
  api = (DOCS / "api.md").read_text(encoding="utf-8")
  listed = set(re.findall(r"^::: (\S+)\s*$", api, re.M))
  for name in jaxrnn.__all__:
    assert f"jaxrnn.{name}" in listed, f"docs/api.md does not list jaxrnn.{name}"
  for name in jaxrnn.interop.__all__:
    assert f"jaxrnn.interop.{name}" in listed, f"docs/api.md does not list jaxrnn.interop.{name}"


def test_every_page_is_in_the_nav():
  nav = set(re.findall(r"^\s+- [^:]+: (\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
  for page in DOCS.glob("*.md"):
    assert page.name in nav, f"mkdocs.yml: {page.name} is not in the nav"
  assert {"two_d.md", "frameworks.md", "architecture.md", "api.md"} <= nav


def markdown_table(text, header_start):
  """The rows of the Markdown table whose header line starts with ``header_start``."""
  lines = [line.strip() for line in text.splitlines()]
  start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
  rows = []
  for line in lines[start + 2:]:
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in line.strip("|").split("|")])
  return rows


def number(text):
  text = text.replace("×", "").replace("†", "")
  return None if text in ("–", "-") else float(text)


@pytest.mark.parametrize("device, columns", [
    ("cpu", ["best JAX peer", "PyTorch"]),
    ("gpu", ["best JAX peer", "jax.experimental.rnn (cuDNN)", "PyTorch (cuDNN)"]),
])
def test_chart_data_is_the_published_table(device, columns):
  """docs/data/speed-*.json (the charts' data) holds the performance page's figures."""
  data = json.loads((DOCS / "data" / f"speed-{device}.json").read_text(encoding="utf-8"))
  page = (DOCS / "performance.md").read_text(encoding="utf-8")
  rows = markdown_table(page, "| cell | B, T, D, H | task | jaxrnn ms | best JAX peer ms | "
                        + ("vs best JAX | vs PyTorch |" if device == "cpu" else
                           "vs best JAX | vs `jax.experimental.rnn` (cuDNN) |"))
  assert len(rows) == len(data["points"]) == 24
  for row, point in zip(rows, data["points"]):
    peer, ms = row[4].rsplit(" ", 1)
    assert row[:3] == [point["cell"], ", ".join(str(point[k]) for k in "BTDH"), point["task"]]
    assert (number(row[3]), peer, float(ms)) == (
        point["jaxrnn_ms"], point["best_jax_peer"], point["best_jax_peer_ms"])
    assert [number(v) for v in row[5:5 + len(columns)]] == [point["speedup"][c] for c in columns]
    if device == "gpu":
      assert ("†" in row[5]) == point["speedup_from_unroll_16_8_run"]
      assert number(row[8]) == point["jaxrnn_ms_unroll_16_8"]
      assert number(row[9]) == point["speedup_vs_best_jax_cpu_rules"]
