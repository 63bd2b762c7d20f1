"""Benchmarks of jaxrnn against Flax, Equinox, Haiku and PyTorch (not tests).

Entry point: ``python -m benchmarks.run`` (``make bench``); see
``benchmarks/README.md``. Parts: speed (`benchmarks.run`), long-sequence
memory (`benchmarks.memory`), compile time (`benchmarks.compile_time`).
Results go to ``benchmarks/results/`` as JSON.

This module holds the helpers the parts share; it imports nothing heavy.
"""

import datetime
import json
import os
import platform
import sys
from importlib import metadata

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# The benchmarks compare against the CPU build of PyTorch: keep JAX on the
# CPU too unless the caller chose a platform explicitly.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# PyTorch's OpenMP threads otherwise spin for a while after each call, taking
# the cores from whichever implementation the interleaved loop runs next.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _version(dist):
  try:
    return metadata.version(dist)
  except metadata.PackageNotFoundError:
    return None


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def available_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def machine_info() -> dict:
  """The machine and the versions that produced a result."""
  info = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "hostname": platform.node(),
      "cpu_model": cpu_model(),
      "cores_available": available_cores(),
      "cpu_count": os.cpu_count(),
      "platform": platform.platform(),
      "python": sys.version.split()[0],
      "versions": {
          name: _version(dist) for name, dist in (
              ("jaxrnn", "jaxrnn"), ("jax", "jax"), ("jaxlib", "jaxlib"),
              ("flax", "flax"), ("equinox", "equinox"), ("haiku", "dm-haiku"),
              ("torch", "torch"), ("numpy", "numpy"))
      },
      "env": {k: os.environ.get(k) for k in (
          "JAX_PLATFORMS", "XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
          "OMP_WAIT_POLICY", "JAX_DEFAULT_MATMUL_PRECISION",
          "XLA_PYTHON_CLIENT_PREALLOCATE")
              if os.environ.get(k) is not None},
  }
  try:
    info["loadavg_1_5_15"] = list(os.getloadavg())
  except OSError:
    pass
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal:"):
          info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
          break
  except OSError:
    pass
  info["jaxrnn_git"] = _git_state()
  if "jax" in sys.modules:
    import jax
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [str(d) for d in jax.devices()]
    info["jax_device_kind"] = jax.devices()[0].device_kind
    info["jax_default_matmul_precision"] = jax.config.jax_default_matmul_precision
  if "torch" in sys.modules:
    import torch
    info["torch_num_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
      info["torch_cuda_device"] = torch.cuda.get_device_name(0)
      info["torch_cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
      info["torch_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
  return info


def _git_state():
  """The commit and whether jaxrnn/ has uncommitted changes (None if no git)."""
  import subprocess
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                          text=True, timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "jaxrnn"], cwd=root,
                           capture_output=True, text=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return {"commit": head or None, "jaxrnn_dirty": bool(dirty)}


def timestamp() -> str:
  return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def write_json(name: str, payload: dict, path: str | None = None) -> str:
  """Writes ``payload`` to ``path`` (default ``results/<name>-<time>.json``)."""
  if path is None:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}-{timestamp()}.json")
  else:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(payload, f, indent=1, default=str)
  return path
