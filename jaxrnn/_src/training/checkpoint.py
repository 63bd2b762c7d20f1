"""Checkpoints of training state: one ``.npz`` file per step, written atomically.

A checkpoint holds any pytree of arrays (params, optax states, NamedTuples,
``None`` leaves, scalars, step counters, typed PRNG keys) as a ``.npz``
archive: one array per leaf, named ``leaf_00000``, ``leaf_00001``, ... in
the order of ``jax.tree_util.tree_flatten``, and ``__manifest__``, a JSON
text (as ``uint8``) that gives each leaf's pytree path, dtype and shape, and
the step. Leaves are found by their paths. The file is written under
a temporary name in the same directory and renamed into place
(``os.replace``), so a crash mid-write never leaves a half-written
checkpoint under a checkpoint's name. Loading never unpickles anything, and
a file that cannot be used (cut short, damaged, or another program's file
under a checkpoint's name) raises a ``ValueError`` that names it and the
earlier steps to load instead.

Restoring needs a ``like`` tree (e.g. freshly initialised params and
``optimizer.init(params)``): the structure comes from ``like`` and the
checkpoint must hold exactly its leaves, with the same shapes and dtypes;
with ``part`` (e.g. ``"['params']"``), ``like`` matches that subtree only.
"""

import json
import math
import os
import pathlib
import re
import tempfile
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

PathLike = Union[str, os.PathLike]

_FORMAT = "jaxrnn.checkpoint"
_VERSION = 1
_MANIFEST = "__manifest__"
_NAME = re.compile(r"^checkpoint_(\d+)\.npz$")
_PYTHON_SCALARS = (bool, int, float, complex)


def _file_name(step: int) -> str:
  return f"checkpoint_{step:08d}.npz"


def _check_step(step: Any) -> int:
  if isinstance(step, (bool, np.bool_)) or not (
      isinstance(step, (int, np.integer)) or (
          isinstance(step, jax.Array) and step.shape == ()
          and jnp.issubdtype(step.dtype, jnp.integer))):
    raise TypeError(f"step: expected a non-negative int, got {type(step).__name__} {step!r}")
  step = int(step)
  if step < 0:
    raise ValueError(f"step: expected a non-negative int, got {step}")
  return step


def _path_str(path: tuple) -> str:
  return jax.tree_util.keystr(path) or "(root)"


def _is_key(leaf: Any) -> bool:
  dtype = getattr(leaf, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _to_numpy(path: str, leaf: Any) -> tuple[np.ndarray, dict]:
  """One leaf as a storable NumPy array and its manifest entry."""
  entry: dict[str, Any] = {"path": path}
  if _is_key(leaf):
    entry["key_impl"] = str(jax.random.key_impl(leaf))
    leaf = jax.random.key_data(leaf)
  if isinstance(leaf, _PYTHON_SCALARS):
    entry["python"] = type(leaf).__name__
  try:
    array = np.asarray(jax.device_get(leaf))
  except Exception as err:  # noqa: BLE001 - re-raised with the leaf's path
    raise TypeError(
        f"tree: leaf {path} ({type(leaf).__name__}) is not an array") from err
  if array.dtype.kind not in "biufcV":
    raise TypeError(
        f"tree: leaf {path} has dtype {array.dtype}; only numeric arrays can "
        "be saved")
  entry["dtype"] = str(array.dtype)
  entry["shape"] = list(array.shape)
  if array.dtype.kind == "V":
    # bfloat16, float8 and friends (ml_dtypes): stored as their raw bits.
    array = array.view(np.dtype(f"u{array.dtype.itemsize}"))
  return array, entry


def _fsync_directory(directory: pathlib.Path) -> None:
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _steps(directory: pathlib.Path) -> list[int]:
  if not directory.is_dir():
    return []
  steps = []
  for entry in directory.iterdir():
    match = _NAME.match(entry.name)
    if match and entry.is_file():
      steps.append(int(match.group(1)))
  return sorted(steps)


def save_checkpoint(directory: PathLike, step: int, tree: Any, *,
                    keep: Optional[int] = None) -> pathlib.Path:
  """Saves a pytree of arrays as the checkpoint of ``step``.

  Writes ``directory/checkpoint_<step>.npz`` atomically (a temporary file in
  ``directory``, flushed to disk, then renamed over the final name), so a
  crash leaves either the previous checkpoints or the complete new one. An
  existing checkpoint of the same step is replaced.

  Args:
    directory: where checkpoints live; created if missing.
    step: a non-negative int, e.g. the number of updates done.
    tree: any pytree whose leaves are arrays (JAX or NumPy, any dtype
      including bfloat16), Python or NumPy scalars, or typed PRNG keys
      (``jax.random.key``). ``None`` is an empty subtree. Arrays are fetched
      to the host; it must fit there.
    keep: ``None`` keeps every checkpoint; an int ``n >= 1`` then deletes
      all but the ``n`` highest steps.

  Returns:
    The path of the checkpoint file.

  Example:
    >>> import tempfile, jax.numpy as jnp, jaxrnn
    >>> directory = tempfile.mkdtemp()
    >>> state = {"params": (jnp.ones(3), None), "step": 10}
    >>> path = jaxrnn.save_checkpoint(directory, 10, state)
    >>> path.name, jaxrnn.latest_step(directory)
    ('checkpoint_00000010.npz', 10)
  """
  step = _check_step(step)
  if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
    raise ValueError(f"keep: expected None or an int >= 1, got {keep!r}")
  directory = pathlib.Path(directory)
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  arrays: dict[str, Any] = {}
  entries = []
  for i, (path, leaf) in enumerate(leaves):
    array, entry = _to_numpy(_path_str(path), leaf)
    entry["key"] = f"leaf_{i:05d}"
    arrays[entry["key"]] = array
    entries.append(entry)
  seen = set()
  for entry in entries:
    if entry["path"] in seen:
      raise ValueError(f"tree: two leaves share the path {entry['path']}")
    seen.add(entry["path"])
  manifest = {"format": _FORMAT, "version": _VERSION, "step": step, "leaves": entries}
  arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode("utf-8"), np.uint8)

  directory.mkdir(parents=True, exist_ok=True)
  final = directory / _file_name(step)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-checkpoint-", suffix=".npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, final)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  _fsync_directory(directory)
  if keep is not None:
    for old in _steps(directory)[:-keep]:
      (directory / _file_name(old)).unlink(missing_ok=True)
  return final


def latest_step(directory: PathLike) -> Optional[int]:
  """The highest step with a checkpoint in ``directory``, or ``None``.

  Args:
    directory: a checkpoint directory (it need not exist).

  Returns:
    An int, or ``None`` when there is no checkpoint (or no directory).

  Example:
    >>> import tempfile, jaxrnn
    >>> print(jaxrnn.latest_step(tempfile.mkdtemp()))
    None
  """
  steps = _steps(pathlib.Path(directory))
  return steps[-1] if steps else None


_ZIP_MAGIC = b"PK\x03\x04"


def _unreadable(path: pathlib.Path, problem: str, step: int) -> ValueError:
  """The error for a checkpoint file that cannot be used, with a way out."""
  directory = path.parent
  earlier = [s for s in _steps(directory) if s < step]
  if earlier:
    listed = ("step " if len(earlier) == 1 else "steps ") + ", ".join(map(str, earlier))
    hint = (f"Earlier checkpoints in {directory}: {listed}; "
            f"restore_checkpoint(directory, like, step={earlier[-1]}) loads the "
            "latest of them.")
  else:
    hint = f"There is no earlier checkpoint in {directory}."
  return ValueError(f"directory: {path} {problem}. {hint}")


def _foreign_or_damaged(path: pathlib.Path) -> str:
  """Why a file that failed to load failed: its first bytes tell."""
  with open(path, "rb") as f:
    head = f.read(len(_ZIP_MAGIC))
  if not head:
    return "is empty (truncated or damaged)"
  if _ZIP_MAGIC.startswith(head):
    return "is truncated or damaged"
  return "is not a jaxrnn checkpoint (not a .npz archive)"


class _NotACheckpoint(Exception):
  """A readable file that is something other than a jaxrnn checkpoint."""


def _read_unchecked(path: pathlib.Path) -> tuple[dict, dict]:
  data = np.load(path, allow_pickle=False)
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise _NotACheckpoint("is not a jaxrnn checkpoint (a .npy array, not a .npz archive)")
  with data:
    if _MANIFEST not in data.files:
      raise _NotACheckpoint(
          f"is not a jaxrnn checkpoint (no manifest; it holds {sorted(data.files)[:8]})")
    manifest = json.loads(bytes(data[_MANIFEST]).decode("utf-8"))
    if not isinstance(manifest, dict):
      raise _NotACheckpoint("is not a jaxrnn checkpoint (its manifest is not a JSON object)")
    if manifest.get("format") != _FORMAT or manifest.get("version") != _VERSION:
      raise _NotACheckpoint(
          f"has format {manifest.get('format')!r} version "
          f"{manifest.get('version')!r}; expected {_FORMAT!r} version {_VERSION}")
    arrays = {}
    for entry in manifest["leaves"]:
      array = data[entry["key"]]  # reading checks the entry's CRC-32
      dtype = np.dtype(jnp.dtype(entry["dtype"]))
      if (array.dtype.itemsize != dtype.itemsize
          or array.size != math.prod(entry["shape"])):
        raise ValueError(
            f"leaf {entry['path']} holds {array.size} x {array.dtype}, its "
            f"manifest {entry['shape']} x {dtype}")
      arrays[entry["path"]] = (entry, array)
    manifest["step"] = int(manifest["step"])
  return manifest, arrays


def _read(path: pathlib.Path, step: int) -> tuple[dict, dict]:
  """The manifest and ``{leaf path: (entry, array)}`` of a checkpoint file.

  Every way a file can be unusable (cut short by a full disk or a killed
  copy, bytes changed on the way, another program's file under a
  checkpoint's name) raises a ``ValueError`` that names the file and the
  earlier steps there are to fall back on.
  """
  try:
    return _read_unchecked(path)
  except (FileNotFoundError, PermissionError, IsADirectoryError):
    raise
  except _NotACheckpoint as err:
    raise _unreadable(path, str(err), step) from None
  except Exception as err:  # noqa: BLE001 - zipfile, numpy and json errors alike
    problem = _foreign_or_damaged(path)
    raise _unreadable(path, f"{problem} ({type(err).__name__}: {err})", step) from err


def _like_spec(leaf: Any) -> tuple[tuple, Any, Optional[str]]:
  """``(shape, dtype, key_impl)`` expected from a ``like`` leaf."""
  if _is_key(leaf):
    data = jax.eval_shape(jax.random.key_data, leaf)
    return tuple(data.shape), np.dtype(data.dtype), str(jax.random.key_impl(leaf))
  if isinstance(leaf, _PYTHON_SCALARS):
    return (), None, None
  if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
    leaf = np.asarray(leaf)
  return tuple(leaf.shape), np.dtype(leaf.dtype), None


def _restore_leaf(like: Any, entry: dict, stored: np.ndarray) -> Any:
  dtype = np.dtype(jnp.dtype(entry["dtype"]))
  array = stored.view(dtype) if stored.dtype != dtype else stored
  array = array.reshape(entry["shape"])
  if isinstance(like, _PYTHON_SCALARS):
    return type(like)(array.item())
  if isinstance(like, (np.ndarray, np.generic)):
    return array.copy()
  if "key_impl" in entry:
    value = jax.random.wrap_key_data(jnp.asarray(array), impl=entry["key_impl"])
  else:
    value = jnp.asarray(array)
  if isinstance(like, jax.Array) and getattr(like, "sharding", None) is not None:
    # Where the like leaf lives (and committed like it, so that a jitted step
    # fed restored state does not compile again).
    value = jax.device_put(value, like.sharding)
  return value


# The first key of a path as `jax.tree_util.keystr` writes it: ['a'], [0], .name.
_FIRST_KEY = re.compile(r"""\[(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\]]*)\]|\.\w+""")


def _is_under(path: str, part: str) -> bool:
  """Whether the leaf ``path`` is ``part`` or lies below it."""
  return path == part or (path.startswith(part) and path[len(part)] in "[.")


def _parts_matching(like_paths: list[str], stored: dict) -> list[str]:
  """The subtrees of the checkpoint whose leaves are exactly ``like_paths``."""
  found = []
  for path in stored:
    prefix = path[:len(path) - len(like_paths[0])]
    if (path.endswith(like_paths[0]) and prefix and _is_under(path, prefix)
        and prefix not in found
        and sorted(p for p in stored if _is_under(p, prefix)) == sorted(
            prefix + p for p in like_paths)):
      found.append(prefix)
  return found


def _top_keys(paths: Any) -> str:
  """The distinct first keys of leaf paths, e.g. ``['params'], ['opt_state']``."""
  return ", ".join(dict.fromkeys(m.group(0) for m in map(_FIRST_KEY.match, paths) if m))


def _part_hint(wanted: list[str], stored: dict) -> str:
  """How to restore a subtree, for a ``like`` that is not the saved tree."""
  matches = _parts_matching(wanted, stored) if wanted else []
  if matches:
    matches.sort(key=len)  # the shortest path first: ['params'] before ['opt_state'][0].mu
    if len(matches) == 1:
      return f"like matches the part {matches[0]} of the checkpoint: pass part={matches[0]!r}"
    return (f"like matches the parts {', '.join(matches)} of the checkpoint: pass part= "
            f"the one to restore, e.g. part={matches[0]!r}")
  return ("restore into a like tree with the saved structure, or pass part= the key "
          f"path of one subtree ({_top_keys(stored)} or a path below them) with a like "
          "tree structured as that subtree")


def _select_part(part: Any, stored: dict, step: int) -> dict:
  """The leaves of ``stored`` that lie in the subtree ``part``."""
  if not isinstance(part, str):
    raise TypeError(
        "part: expected the key path of a subtree as a str, e.g. \"['params']\", got "
        f"{type(part).__name__} {part!r}")
  selected = {path: value for path, value in stored.items() if _is_under(path, part)}
  if not part or not selected:
    raise ValueError(
        f"part: expected the key path of a subtree of the checkpoint of step {step} "
        f"({_top_keys(stored) or 'it holds no subtree'} or a path below them), got {part!r}")
  return selected


def restore_checkpoint(directory: PathLike, like: Any, *,
                       step: Optional[int] = None,
                       part: Optional[str] = None) -> tuple[Any, int]:
  """Loads a checkpoint, or one subtree of it, into the structure of ``like``.

  Every leaf of ``like`` must be in the checkpoint under the same path, with
  the same shape and dtype, and the checkpoint must hold no other leaf;
  otherwise a ``ValueError`` names the first leaf path that differs. Values
  are bit-exact. Restored leaves take the kind of their ``like`` leaf: JAX
  arrays (on the ``like`` leaf's sharding), NumPy arrays, Python scalars or
  typed PRNG keys.

  With ``part``, only the subtree of the checkpoint at that key path is
  restored (e.g. the params of a checkpoint saved as ``{"params": ...,
  "opt_state": ...}``), and ``like`` is structured like that subtree. The
  path is written as `jax.tree_util.keystr` writes it, as error messages and
  the file's manifest name leaves: ``"['params']"``, ``"[0]"``,
  ``"['opt_state'][0].mu"``. A path is needed, not guessed: an Adam state's
  ``mu`` and ``nu`` have the structure of the params too.

  Args:
    directory: the checkpoint directory.
    like: a pytree shaped like the saved one, or like its subtree ``part``
      (e.g. fresh params and ``optimizer.init(params)``); its values are not
      used, and its leaves may be ``jax.ShapeDtypeStruct``.
    step: the step to load; ``None`` loads `latest_step`.
    part: ``None`` (the whole checkpoint) or the key path of the subtree to
      restore, e.g. ``"['params']"``.

  Returns:
    ``(tree, step)``: the restored pytree, structured like ``like``, and its
    step.

  Raises:
    FileNotFoundError: no checkpoint (of ``step``) in ``directory``.
    ValueError: the checkpoint (or its ``part``) does not match ``like``,
      or holds no subtree ``part``; or its file is truncated, damaged or
      not a jaxrnn checkpoint, in which case the message names the file and
      the earlier steps that can be loaded instead with ``step=``.
    TypeError: ``part`` is not a str.

  Example:
    >>> import tempfile, jax.numpy as jnp, jaxrnn
    >>> directory = tempfile.mkdtemp()
    >>> state = {"params": {"w": jnp.arange(3.0)}, "step": 3}
    >>> _ = jaxrnn.save_checkpoint(directory, 3, state)
    >>> jaxrnn.restore_checkpoint(directory, {"w": jnp.zeros(3)}, part="['params']")
    ({'w': Array([0., 1., 2.], dtype=float32)}, 3)
  """
  directory = pathlib.Path(directory)
  if step is None:
    step = latest_step(directory)
    if step is None:
      raise FileNotFoundError(f"directory: no checkpoint in {directory}")
  else:
    step = _check_step(step)
  path = directory / _file_name(step)
  if not path.is_file():
    raise FileNotFoundError(
        f"step: no checkpoint of step {step} in {directory} (steps there: "
        f"{_steps(directory)})")
  manifest, stored = _read(path, step)
  if part is not None:
    stored = _select_part(part, stored, step)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  if part is None:
    wanted = [_path_str(p) for p, _ in leaves]
  else:
    wanted = [part + jax.tree_util.keystr(p) for p, _ in leaves]
  where = f"the checkpoint of step {step}" + ("" if part is None else f" under {part}")
  missing = [p for p in wanted if p not in stored]
  if missing:
    hint = "" if part is not None else "; " + _part_hint(wanted, stored)
    raise ValueError(
        f"like: leaf {missing[0]} is not in {where} ({len(missing)} missing; it holds "
        f"{sorted(stored)[:8]}{' ...' if len(stored) > 8 else ''}){hint}")
  extra = sorted(set(stored) - set(wanted))
  if extra:
    hint = "like must hold every leaf of the part" if part is not None else _part_hint(
        wanted, stored)
    raise ValueError(
        f"like: {where} holds leaf {extra[0]} that like does not have "
        f"({len(extra)} extra); {hint}")
  out = []
  for (leaf_path, leaf), name in zip(leaves, wanted):
    entry, array = stored[name]
    shape, dtype, key_impl = _like_spec(leaf)
    saved_dtype = np.dtype(jnp.dtype(entry["dtype"]))
    if key_impl != entry.get("key_impl"):
      raise ValueError(
          f"like: leaf {name} is {'a PRNG key ' + key_impl if key_impl else 'not a PRNG key'}"
          f" but the checkpoint of step {step} holds "
          f"{'a PRNG key ' + entry['key_impl'] if entry.get('key_impl') else 'an array'}")
    if tuple(entry["shape"]) != shape:
      raise ValueError(
          f"like: leaf {name} has shape {shape} but the checkpoint of step "
          f"{step} holds shape {tuple(entry['shape'])}")
    if dtype is not None and saved_dtype != dtype:
      raise ValueError(
          f"like: leaf {name} has dtype {dtype} but the checkpoint of step "
          f"{step} holds dtype {saved_dtype}")
    out.append(_restore_leaf(leaf, entry, array))
  return jax.tree_util.tree_unflatten(treedef, out), int(manifest["step"])
