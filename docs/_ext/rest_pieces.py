"""A griffe extension for the API reference: reST pieces of docstrings as Markdown.

jaxrnn's docstrings are Google style with a few reStructuredText habits
that the Markdown renderer would show as prose:

* ``Example:`` titles its doctests; the Google-style parser takes it for an
  admonition, while ``Examples:`` is the section whose ``>>>`` lines it
  shows as code;
* ``.. math::`` blocks hold LaTeX, shown here as a code block;
* simple tables (rows between ``=====  =====`` rules), shown as a code block.
"""

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_RULE = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def _fenced(body: list[str], indent: int) -> list[str]:
  """``body`` as a fenced code block at ``indent``, its own indentation kept."""
  while body and not body[-1].strip():
    body = body[:-1]
  inner = min((_indent(line) for line in body if line.strip()), default=0)
  pad = " " * indent
  return ([pad + "```text"] + [pad + line[inner:] if line.strip() else "" for line in body]
          + [pad + "```"])


def markdown(text: str) -> str:
  """``text`` with its ``Example:`` titles, math blocks and tables rewritten."""
  text = _EXAMPLE.sub(r"\1Examples:", text)
  lines, out, i = text.split("\n"), [], 0
  while i < len(lines):
    line, indent = lines[i], _indent(lines[i])
    if line.strip() == ".. math::":
      j = i + 1
      while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
        j += 1
      out += _fenced(lines[i + 1:j], indent) + [""]
      i = j
      continue
    if _RULE.match(line):
      j = i
      while j < len(lines) and lines[j].strip():
        j += 1
      if sum(bool(_RULE.match(l)) for l in lines[i:j]) >= 2:
        out += _fenced(lines[i:j], indent)
        i = j
        continue
    out.append(line)
    i += 1
  return "\n".join(out)


class ReSTPieces(griffe.Extension):
  """Rewrites every docstring with `markdown` before it is parsed."""

  def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
    if obj.docstring is not None:
      obj.docstring.value = markdown(obj.docstring.value)
