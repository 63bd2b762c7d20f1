"""jaxrnn's NamedTuples registered with ``jax.export`` under stable names.

``Exported.serialize()`` writes the pytree structure of a function's inputs
and outputs, and refuses a NamedTuple it has no name for. Every public
params and carry type is registered as ``"jaxrnn.<Name>"``, so that an
export which takes params (or returns a carry) serializes, and deserializes
in any process that imports jaxrnn. The names are part of the serialized
format: renaming one breaks exports made before.
"""

from typing import Iterable

import jax


def register_namedtuples(types: Iterable[type]) -> None:
  """Registers each NamedTuple class in ``types`` as ``"jaxrnn.<name>"``."""
  for cls in types:
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
      continue
    try:
      jax.export.register_namedtuple_serialization(cls, serialized_name=f"jaxrnn.{cls.__name__}")
    except ValueError:  # registered already: the module was imported again
      pass
