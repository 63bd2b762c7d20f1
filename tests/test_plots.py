"""benchmarks/plots.py: charts from benchmarks.run's results and from the published tables."""

import json
import pathlib

import pytest

pytest.importorskip("matplotlib")

from benchmarks import plots  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parent.parent / "docs" / "data"
PNG = b"\x89PNG\r\n\x1a\n"


def run_payload():
  """A results file shaped like benchmarks.run's: two grid points."""
  def result(peer, family, ms, base):
    return {"peer": peer, "family": family, "median_ms": ms, "speedup": ms / base}

  points = []
  for task, base in (("fwd", 2.0), ("fwd+bwd", 5.0)):
    points.append({
        "cell": "lstm", "B": 8, "T": 50, "D": 16, "H": 32, "task": task,
        "results": [result("jaxrnn", "jax", base, base), result("flax", "jax", 3.0, base),
                    result("haiku", "jax", 2.5, base), result("torch", "torch", 1.0, base)],
    })
  return {"kind": "jaxrnn-benchmark", "options": {"device": "cpu"}, "speed": points,
          "machine": {"cpu_model": "a CPU", "cores_available": 2,
                      "versions": {"jax": "0.0"}, "date": "2026-11-27"}}


def test_a_run_becomes_a_chart_next_to_it(tmp_path):
  path = tmp_path / "bench-20261127-120000.json"
  path.write_text(json.dumps(run_payload()))
  chart = plots.load(str(path))
  assert chart.peers == ["Flax", "Haiku", "PyTorch"]
  assert [p.speedup for p in chart.points] == [
      {"Flax": 1.5, "Haiku": 1.25, "PyTorch": 0.5}, {"Flax": 0.6, "Haiku": 0.5, "PyTorch": 0.2}]
  out = plots.plot_file(str(path))
  assert out == str(tmp_path / "bench-20261127-120000.png")
  assert pathlib.Path(out).read_bytes()[:8] == PNG


def test_a_run_without_speed_results_draws_nothing(tmp_path):
  path = tmp_path / "bench-quick.json"
  path.write_text(json.dumps(dict(run_payload(), speed=[])))
  assert plots.plot_file(str(path)) is None
  assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("name", ["speed-cpu", "speed-gpu"])
def test_the_published_tables_chart(tmp_path, name):
  chart = plots.load(str(DATA / f"{name}.json"))
  assert len(chart.points) == 24
  assert chart.peers[0] == "best JAX peer"
  hatched = sum(p.other_run for p in chart.points)
  assert hatched == (13 if name == "speed-gpu" else 0)
  plots.main([str(DATA / f"{name}.json"), "--out-dir", str(tmp_path)])
  assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG


def test_other_json_is_refused(tmp_path):
  path = tmp_path / "other.json"
  path.write_text(json.dumps({"kind": "something else"}))
  with pytest.raises(ValueError, match="not a benchmarks.run result"):
    plots.load(str(path))


def test_benchmarks_run_charts_what_it_wrote(tmp_path, capsys):
  from benchmarks import run
  path = tmp_path / "bench-20261127-130000.json"
  path.write_text(json.dumps(run_payload()))
  run.plot(str(path))
  assert (tmp_path / "bench-20261127-130000.png").read_bytes()[:8] == PNG
  assert "bench-20261127-130000.png" in capsys.readouterr().out
