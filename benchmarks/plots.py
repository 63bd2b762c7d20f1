"""Charts of jaxrnn's speed-up against each peer, one PNG per results file.

``python -m benchmarks.plots [JSON ...] [--out-dir DIR]`` reads

* the JSON that ``python -m benchmarks.run`` writes (``bench-<time>.json``:
  its ``speed`` list holds every implementation's median at each grid
  point), or
* a table of published figures (``"kind": "jaxrnn-speed-table"``, as
  ``docs/data/speed-cpu.json`` and ``speed-gpu.json``: per grid point,
  jaxrnn's speed-up against each peer as printed in the documentation),

and writes ``<DIR>/<name of the JSON>.png``: one panel per task (``fwd``,
``fwd+bwd``), one group of bars per grid point (cell and ``B, T, D, H``),
one bar per peer, its height the peer's time over jaxrnn's on a log scale
(above 1: jaxrnn is faster), its value printed on it. Without arguments it
plots the newest ``bench-*.json`` in ``benchmarks/results/`` there.
``benchmarks.run`` calls `plot_file` on the file it has just written.

The documentation's charts come from the published tables::

  python -m benchmarks.plots docs/data/speed-cpu.json docs/data/speed-gpu.json \\
      --out-dir docs/img
"""

import argparse
import glob
import json
import os
from typing import Any, NamedTuple, Optional

import benchmarks

TASKS = ("fwd", "fwd+bwd")
# How benchmarks.run's peer names read on a chart.
PEER_LABELS = {
    "flax": "Flax",
    "flax-opt": "Flax (OptimizedLSTMCell)",
    "equinox": "Equinox",
    "haiku": "Haiku",
    "jax-cudnn": "jax.experimental.rnn (cuDNN)",
    "torch": "PyTorch",
}
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")


class Point(NamedTuple):
  """One grid point: its label and jaxrnn's speed-up against each peer."""

  cell: str
  shape: tuple  # (B, T, D, H)
  task: str
  speedup: dict  # peer label -> peer time / jaxrnn time, or None (not run)
  other_run: bool  # the figures come from a run with other settings (hatched)


class Chart(NamedTuple):
  title: str
  subtitle: str
  peers: list  # peer labels, in legend order
  points: list  # Points
  other_run_note: Optional[str]
  legend: dict  # peer label -> its text in the legend


def _from_run(payload: dict, name: str) -> Chart:
  """A chart of a ``benchmarks.run`` results file."""
  device = payload.get("options", {}).get("device", "cpu")
  points, peers = [], []
  for pt in payload.get("speed") or []:
    speedup = {}
    for r in pt["results"]:
      if r["peer"] == "jaxrnn":
        continue
      label = PEER_LABELS.get(r["peer"], r["peer"])
      speedup[label] = r["speedup"]
      if label not in peers:
        peers.append(label)
    points.append(Point(pt["cell"], tuple(pt[k] for k in "BTDH"), pt["task"], speedup, False))
  machine = payload.get("machine", {})
  versions = machine.get("versions", {})
  where = machine.get("jax_device_kind") if device == "gpu" else machine.get("cpu_model")
  subtitle = ", ".join(v for v in (
      where, f"{machine['cores_available']} cores" if "cores_available" in machine else None,
      f"jax {versions['jax']}" if versions.get("jax") else None,
      machine.get("date")) if v)
  order = [PEER_LABELS.get(p, p) for p in PEER_LABELS]
  peers.sort(key=lambda p: order.index(p) if p in order else len(order))
  return Chart(f"jaxrnn's speed-up, {device.upper()} ({name})", subtitle, peers, points, None,
               {})


def _from_table(payload: dict, name: str) -> Chart:
  """A chart of a published table (``"kind": "jaxrnn-speed-table"``)."""
  points, peers = [], []
  for pt in payload["points"]:
    for label in pt["speedup"]:
      if label not in peers:
        peers.append(label)
    points.append(Point(pt["cell"], tuple(pt[k] for k in "BTDH"), pt["task"],
                        dict(pt["speedup"]), bool(pt.get("speedup_from_unroll_16_8_run"))))
  note = None
  if any(p.other_run for p in points):
    note = "hatched: jaxrnn with unroll (16, 8); its default (4, 4) did not run there"
  legend = {label: f"{label}: {text}" for label, text in payload.get("peers", {}).items()}
  return Chart(f"jaxrnn's speed-up, {payload['title']}", payload.get("machine", ""), peers,
               points, note, legend)


def load(path: str) -> Chart:
  with open(path) as f:
    payload = json.load(f)
  name = os.path.splitext(os.path.basename(path))[0]
  if payload.get("kind") == "jaxrnn-speed-table":
    return _from_table(payload, name)
  if payload.get("kind") == "jaxrnn-benchmark":
    return _from_run(payload, name)
  raise ValueError(f"{path}: not a benchmarks.run result nor a jaxrnn-speed-table")


def _wrap(text: str, width: int = 150) -> str:
  lines, line = [], ""
  for word in text.split(" "):
    if line and len(line) + 1 + len(word) > width:
      lines.append(line)
      line = word
    else:
      line = f"{line} {word}" if line else word
  return "\n".join(lines + [line])


def draw(chart: Chart, out: str) -> str:
  """Writes ``chart`` as a PNG to ``out``; returns ``out``."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.patches import Patch

  tasks = [t for t in TASKS if any(p.task == t for p in chart.points)]
  fig, axes = plt.subplots(len(tasks), 1, figsize=(13, 4.2 * len(tasks) + 1.2), squeeze=False)
  width = 0.8 / max(1, len(chart.peers))
  values = [v for p in chart.points for v in p.speedup.values() if v]
  low, high = min(values + [1.0]), max(values + [1.0])
  for ax, task in zip(axes[:, 0], tasks):
    points = [p for p in chart.points if p.task == task]
    for i, point in enumerate(points):
      for j, peer in enumerate(chart.peers):
        value = point.speedup.get(peer)
        x = i + (j - (len(chart.peers) - 1) / 2) * width
        if not value:
          continue
        ax.bar(x, value, width, color=COLOURS[j % len(COLOURS)],
               hatch="///" if point.other_run else None, edgecolor="white", linewidth=0.5)
        ax.text(x, value * 1.04, f"{value:.2f}", ha="center", va="bottom", rotation=90,
                fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylim(low / 1.3, high * 1.8)
    ax.set_xticks(range(len(points)))
    ax.set_xticklabels([f"{p.cell}\n{','.join(map(str, p.shape))}" for p in points], fontsize=8)
    ax.set_xlim(-0.6, len(points) - 0.4)
    for k in range(1, len(points)):  # a rule between shapes
      if points[k].shape != points[k - 1].shape:
        ax.axvline(k - 0.5, color="0.85", linewidth=0.8, zorder=0)
    ax.set_ylabel("peer time / jaxrnn time")
    ax.set_title(f"{task}: above 1, jaxrnn is faster", fontsize=10, loc="left")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([t for t in (0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20, 30)
                   if low / 1.3 <= t <= high * 1.8])
  handles = [Patch(color=COLOURS[j % len(COLOURS)], label=chart.legend.get(peer, peer))
             for j, peer in enumerate(chart.peers)]
  if chart.other_run_note:
    handles.append(Patch(facecolor="0.6", hatch="///", edgecolor="white",
                         label=chart.other_run_note))
  columns = 2 if chart.legend else min(4, len(handles))
  fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, frameon=False)
  fig.suptitle(chart.title + "\n" + _wrap(chart.subtitle), fontsize=10)
  rows = -(-len(handles) // columns)
  fig.tight_layout(rect=(0, 0.02 + 0.025 * rows, 1, 1))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=100, metadata={"Software": None})
  plt.close(fig)
  return out


def plot_file(path: str, out_dir: Optional[str] = None) -> Optional[str]:
  """Charts one JSON file into ``out_dir`` (default: the JSON's folder);
  returns the PNG's path, or None when the file has no speed results."""
  chart = load(path)
  if not chart.points:
    return None
  name = os.path.splitext(os.path.basename(path))[0]
  return draw(chart, os.path.join(out_dir or os.path.dirname(os.path.abspath(path)),
                                  f"{name}.png"))


def main(argv: Any = None) -> None:
  p = argparse.ArgumentParser(prog="python -m benchmarks.plots",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("json", nargs="*",
                 help="results of benchmarks.run or jaxrnn-speed-table files (default: "
                      "the newest bench-*.json in benchmarks/results/)")
  p.add_argument("--out-dir", default=None,
                 help="where the PNGs go (default benchmarks/results/)")
  args = p.parse_args(argv)
  paths = args.json
  if not paths:
    runs = sorted(glob.glob(os.path.join(benchmarks.RESULTS_DIR, "bench-*.json")),
                  key=os.path.getmtime)
    if not runs:
      raise SystemExit(f"no bench-*.json in {benchmarks.RESULTS_DIR}: run "
                       "python -m benchmarks.run first, or name the JSON files")
    paths = runs[-1:]
  for path in paths:
    out = plot_file(path, args.out_dir or benchmarks.RESULTS_DIR)
    print(f"{path}: {os.path.relpath(out) if out else 'no speed results, nothing plotted'}")


if __name__ == "__main__":
  main()
