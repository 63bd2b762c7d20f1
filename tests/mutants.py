"""Plants known bugs one at a time and checks that `make test`'s suite catches each.

Run from the repository root (not run by CI)::

  python -m tests.mutants                  # every mutant, table on stdout
  python -m tests.mutants --list           # the mutants and their first tests
  python -m tests.mutants --check          # which mutants apply to the tree (no tests)
  python -m tests.mutants --only lstm-gate-order gru-reset-gate-dropped
  python -m tests.mutants --root /path/to/checkout --out mutants.md --timeout 600

Each mutant is a bug named in the closing notes of earlier issues: a cell
equation, masking (lengths, resets, zoneout, dropout), reverse, per-direction
and per-layer keys, a hand-written tangent, bf16 accumulation, 2-D directions,
checkpoints, interop gate orders, the in-place and narrow inference loops,
the bool guard of the number check. A mutant lists one or more alternative
edits ``(file, snippet, replacement)``; the first whose file holds the snippet
exactly once (and still parses once edited) is applied. ``file`` may be a glob
(``jaxrnn/_src/engine/*.py``), so that a snippet is still found after code
moves between modules; the snippet must then occur exactly once among the
matching files. A mutant none of whose edits applies is reported as "did not
apply", and counts as a failure.

For each mutant the repository's files (tracked, and untracked but not
ignored: ``git ls-files -co --exclude-standard``) are copied into a temporary
folder, the edit is made there (never in the tree itself), and `make test`'s
command runs there with ``-x``: ``python -m pytest -n JOBS -q -x`` with
``JAX_PLATFORMS=cpu`` and ``KERAS_BACKEND=jax``. The copy comes first on
``sys.path`` (the working directory and ``PYTHONPATH``), so its ``jaxrnn`` is
the one imported, not an editable install's; every pytest process records the
``jaxrnn`` it imported, and a run that imported another one is an error. A
small plugin (written into the temporary folder and loaded with ``-p``) moves
the mutant's "first" tests to the front of the collected suite without
changing what is collected, so a caught mutant stops within a minute or two,
and records the first failing test. Under xdist, ``-x`` stops a run only
once every worker has run the batch it was sent, so a run is stopped
``STOP_AFTER_FAILURE`` seconds after its first failure. ``--collect-check``
shows that the reordered suite is the full one.
"""

import argparse
import ast
import fnmatch
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import NamedTuple, Optional

REPO = pathlib.Path(__file__).resolve().parents[1]

# `make test`'s command (Makefile, target `test`), with -x.
PYTEST_ARGS = ("-m", "pytest", "-q", "-x")
ENV = {"JAX_PLATFORMS": "cpu", "KERAS_BACKEND": "jax"}


class Edit(NamedTuple):
  """One way to plant a bug: ``snippet`` -> ``replacement`` in ``file`` (a path or glob)."""

  file: str
  snippet: str
  replacement: str


class Mutant(NamedTuple):
  """A planted bug: its name, what it does, the tests to run first, its edits."""

  name: str
  bug: str
  first: tuple[str, ...]
  edits: tuple[Edit, ...]


def _m(name: str, bug: str, first, *edits) -> Mutant:
  return Mutant(name, bug, tuple(first), tuple(Edit(*e) for e in edits))


CELLS = "jaxrnn/_src/cells/"
ENGINE = "jaxrnn/_src/engine/"
LAYERS = "jaxrnn/_src/layers/"
INTEROP = "jaxrnn/_src/interop/"
T_CELLS = "tests/test_cells.py"
T_OPTIONS = "tests/test_cell_options.py"
T_MORE = "tests/test_more_cells.py"
T_LAYERS = "tests/test_layers.py"
T_LENGTHS = "tests/test_lengths.py"
T_SEGMENTS = "tests/test_segments.py"
T_REG = "tests/test_regularisers.py"
T_PARALLEL = "tests/test_parallel.py"
T_TWO_D = "tests/test_two_d.py"
T_TRANSFORMS = "tests/test_transformations.py"

MUTANTS = (
    # --- Cell equations. ---------------------------------------------------
    _m("lstm-gate-order", "lstm: the i and f gates read from each other's blocks",
       [T_CELLS + "::test_cell_apply_matches_numpy", T_LAYERS],
       (CELLS + "lstm.py", "i_t, f_t, _, o_t = jnp.split(s, 4, axis=-1)",
        "f_t, i_t, _, o_t = jnp.split(s, 4, axis=-1)"),
       (CELLS + "*.py", "i_t, f_t, _, o_t = jnp.split(s, 4, axis=-1)",
        "f_t, i_t, _, o_t = jnp.split(s, 4, axis=-1)")),
    _m("lstm-peephole-output-sees-old-state",
       "lstm(peephole=True): the output gate sees c_{t-1} instead of c_t",
       [T_OPTIONS + "::test_against_numpy"],
       (CELLS + "lstm.py", "w_o * c_t)", "w_o * c_tm1)"),
       (CELLS + "*.py", "w_o * c_t)", "w_o * c_tm1)")),
    _m("lstm-layer-norm-cell-state-skipped",
       "lstm(layer_norm=True): c_t is not normalised before its tanh",
       [T_OPTIONS + "::test_against_numpy"],
       (CELLS + "lstm.py", "tanh_c = jnp.tanh(common.layer_norm(c_t, ln_c, eps))",
        "tanh_c = jnp.tanh(c_t)"),
       (CELLS + "*.py", "jnp.tanh(common.layer_norm(c_t, ln_c, eps))", "jnp.tanh(c_t)")),
    _m("lstm-projection-of-cell-state", "lstm(proj_size=P): projects c_t instead of h_t",
       [T_OPTIONS + "::test_against_numpy", "tests/test_interop_torch.py"],
       (CELLS + "lstm.py", "h_t = checks.matmul(h_t, params.W_hr)",
        "h_t = checks.matmul(c_t, params.W_hr)"),
       (CELLS + "*.py", "checks.matmul(h_t, params.W_hr)", "checks.matmul(c_t, params.W_hr)")),
    _m("lstm-layer-norm-summed",
       "lstm(layer_norm=True): the fused tangent scan sums zx and zh before LN(zh)",
       [T_OPTIONS + "::test_gradients_match_finite_differences", "tests/test_gradients.py"],
       (CELLS + "lstm.py", "summed=not layer_norm)", "summed=True)"),
       (CELLS + "*.py", "summed=not layer_norm", "summed=True")),
    _m("gru-reset-gate-dropped", "gru (reset_after=True): n_t ignores the reset gate",
       [T_CELLS + "::test_cell_apply_matches_numpy", T_LAYERS],
       (CELLS + "gru.py", "n_t = jnp.tanh(x_n + r_t * hn_t)", "n_t = jnp.tanh(x_n + hn_t)"),
       (CELLS + "*.py", "jnp.tanh(x_n + r_t * hn_t)", "jnp.tanh(x_n + hn_t)")),
    _m("gru-before-reset-after-product",
       "gru(reset_after=False): the reset gate multiplies nothing (no r_t ⊙ h_{t-1})",
       [T_CELLS + "::test_cell_apply_matches_numpy", "tests/test_interop_keras.py"],
       (CELLS + "gru.py", "checks.matmul(r_t * h_in, params.W_h[:, 2 * H:])",
        "checks.matmul(h_in, params.W_h[:, 2 * H:])"),
       (CELLS + "*.py", "r_t * h_in,", "h_in,")),
    _m("elman-relu-runs-tanh", "elman(activation='relu') applies tanh",
       [T_CELLS + "::test_cell_apply_matches_numpy", T_LAYERS],
       (CELLS + "elman.py", "phi = common.activation_function(activation)", "phi = jnp.tanh")),
    _m("mgu-interpolation-swapped",
       "mgu: h_t = f ⊙ h_{t-1} + (1 - f) ⊙ h̃ (Flax's reading, not the paper's)",
       [T_MORE + "::test_cell_apply_matches_numpy"],
       (CELLS + "mgu.py", "h_t = (1 - f_t) * h_tm1 + f_t * cand_t",
        "h_t = f_t * h_tm1 + (1 - f_t) * cand_t")),
    _m("conv-lstm-padding-shifted", "conv_lstm: causal instead of 'SAME' padding",
       [T_MORE + "::test_cell_apply_matches_numpy"],
       (CELLS + "conv_lstm.py", "padding = ((kh // 2, kh // 2), (kw // 2, kw // 2))",
        "padding = ((kh - 1, 0), (kw - 1, 0))")),
    _m("min-gru-gate-sign", "min_gru: a_t = σ(k) instead of 1 - σ(k) = σ(-k)",
       [T_PARALLEL + "::test_against_numpy_with_lengths_resets_and_reverse"],
       (CELLS + "linear.py", "return jax.nn.sigmoid(-k_z), jax.nn.sigmoid(k_z) * h_tilde",
        "return jax.nn.sigmoid(k_z), jax.nn.sigmoid(k_z) * h_tilde")),
    _m("min-lstm-gates-unnormalised", "min_lstm: f and i are not divided by f + i",
       [T_PARALLEL + "::test_against_numpy_with_lengths_resets_and_reverse"],
       (CELLS + "linear.py",
        "return jnp.exp(log_f - log_norm), jnp.exp(log_i - log_norm) * h_tilde",
        "return jnp.exp(log_f), jnp.exp(log_i) * h_tilde")),
    _m("lru-phase-conjugated", "lru: λ = r e^{-iθ} instead of r e^{iθ}",
       [T_PARALLEL + "::test_against_numpy_with_lengths_resets_and_reverse"],
       (CELLS + "linear.py", "r * jnp.cos(phase), r * jnp.sin(phase)",
        "r * jnp.cos(phase), -r * jnp.sin(phase)")),
    _m("lstm2d-forget-gates-swapped", "lstm2d: f_up gates c_left and f_left gates c_up",
       [T_TWO_D + "::test_lstm2d_matches_numpy"],
       (CELLS + "two_d.py", "c = f_up * up.c + f_left * left.c + i * g",
        "c = f_up * left.c + f_left * up.c + i * g")),
    _m("elman2d-neighbours-swapped", "elman2d: h_up goes through W_left and h_left through W_up",
       [T_TWO_D + "::test_elman2d_matches_numpy"],
       (CELLS + "two_d.py", "h = phi(_preactivation(params, h_up, h_left, x))",
        "h = phi(_preactivation(params, h_left, h_up, x))")),
    # --- Hand-written tangents of the fused engine. --------------------------
    _m("lstm-tangent-forget-path", "lstm_tangent: dc_{t-1} reaches dc_t without ⊙ f_t",
       [T_CELLS + "::test_tangent_is_the_jvp_of_pointwise", "tests/test_gradients.py"],
       (CELLS + "lstm.py", "dc = dcarry.c * f_t + q_i + q_f + q_g",
        "dc = dcarry.c + q_i + q_f + q_g")),
    _m("gru-tangent-carry-path", "gru tangent: dh_{t-1} reaches dh_t without ⊙ z_t",
       [T_CELLS + "::test_tangent_is_the_jvp_of_pointwise", "tests/test_gradients.py"],
       (CELLS + "gru.py", "+ dz * h_tm1 + dh_tm1 * z_t", "+ dz * h_tm1 + dh_tm1")),
    _m("elman-tangent-tanh-derivative", "elman tangent: tanh' dropped (dh = dz)",
       [T_CELLS + "::test_tangent_is_the_jvp_of_pointwise", "tests/test_gradients.py"],
       (CELLS + "elman.py", "dh = common.dtanh(dz, res)", "dh = dz")),
    # --- Masks: lengths, padding, resets. ------------------------------------
    _m("padding-updates-the-carry", "padded steps update the carry (valid mask dropped)",
       [T_LENGTHS + "::test_rnn_padding_invariance", T_LAYERS],
       (ENGINE + "steps.py", "new_c, y = select(valid_t, new_c, c), zero_unless(valid_t, y)",
        "new_c, y = new_c, zero_unless(valid_t, y)"),
       (ENGINE + "*.py", "select(valid_t, new_c, c)", "new_c")),
    _m("padding-inputs-not-zeroed", "rnn.apply no longer zeroes the padded steps of xs",
       ["tests/test_gradients.py::test_rnn_options_match_plain_path",
        T_TRANSFORMS + "::test_every_transformation_matches_plain_autodiff"
        "[elman-lengths-defaults]"],
       (LAYERS + "rnn.py", "xs = common.mask_steps(xs, length)", "pass")),
    _m("linear-padding-not-identity", "linear engine: a padded step is (0, 0), not (1, 0)",
       [T_PARALLEL + "::test_against_numpy_with_lengths_resets_and_reverse", T_LENGTHS],
       (ENGINE + "linear.py", "a = jnp.where(flags(valid), a, jnp.ones((), a.dtype))",
        "a = jnp.where(flags(valid), a, jnp.zeros((), a.dtype))"),
       (ENGINE + "*.py", "jnp.where(valid, a, jnp.ones((), a.dtype))",
        "jnp.where(valid, a, jnp.zeros((), a.dtype))")),
    _m("segment-reset-ignored", "a segment reset does not restart the carry",
       [T_SEGMENTS + "::test_packed_row_equals_separate_runs"],
       (ENGINE + "steps.py", "c = select(reset_t, initial, c)", "c = select(reset_t, c, c)"),
       (ENGINE + "*.py", "select(reset_t, initial, c)", "select(reset_t, c, c)")),
    _m("segment-reset-reverse-unshifted",
       "a reversed scan restarts at a segment's first step instead of after its last",
       [T_SEGMENTS + "::test_packed_row_equals_separate_runs", T_SEGMENTS],
       (ENGINE + "steps.py", "reset = jnp.concatenate([reset[1:], jnp.zeros((1,), bool)])",
        "reset = reset"),
       (ENGINE + "*.py", "reset = jnp.concatenate([reset[1:], jnp.zeros((1,), bool)])",
        "reset = reset")),
    # --- Reverse. ------------------------------------------------------------
    _m("fused-path-ignores-reverse", "the fused path scans forward when reverse=True",
       [T_LAYERS + "::test_bidirectional_matches_numpy", T_LENGTHS],
       (ENGINE + "__init__.py", "fused_lib.Static(hooks, plan.reverse,",
        "fused_lib.Static(hooks, False,"),
       (ENGINE + "*.py", "Static(hooks, plan.reverse,", "Static(hooks, False,"),
       (ENGINE + "fused.py", "return Static(self.hooks, self.reverse,",
        "return Static(self.hooks, False,")),
    _m("remat-chunks-forward-under-reverse",
       "remat: chunks run first to last when reverse=True",
       [T_SEGMENTS + "::test_packed_row_equals_separate_runs", T_PARALLEL, T_REG],
       (ENGINE + "__init__.py", "(xs_c, steps_c), reverse=plan.reverse)",
        "(xs_c, steps_c), reverse=False)"),
       (ENGINE + "*.py", "(xs_c, steps_c), reverse=plan.reverse)",
        "(xs_c, steps_c), reverse=False)"),
       (ENGINE + "*.py", "(xs, steps), chunk, reverse=plan.reverse",
        "(xs, steps), chunk, reverse=False")),
    _m("parallel-carry-folds-into-step-0",
       "associative scan: the initial carry folds into step 0 even when reversed",
       [T_PARALLEL + "::test_against_numpy_with_lengths_resets_and_reverse", T_PARALLEL],
       (ENGINE + "linear.py", "b = b.at[first].add(a[first] * h0)",
        "b = b.at[0].add(a[0] * h0)"),
       (ENGINE + "*.py", "b.at[first].add(a[first] * h0)", "b.at[0].add(a[0] * h0)")),
    # --- Keys per direction and layer; dropout and zoneout. -------------------
    _m("bidirectional-backward-gets-no-key",
       "bidirectional: the backward half gets no key (no dropout, no zoneout)",
       [T_REG + "::test_bidirectional_directions_draw_their_own_masks", T_REG],
       (LAYERS + "bidirectional.py", "reset=reset, key=k_b)", "reset=reset, key=None)"),
       (LAYERS + "*.py", "key=k_b)", "key=None)")),
    _m("bidirectional-directions-share-a-key",
       "bidirectional: the forward half draws from the backward half's key",
       [T_REG + "::test_bidirectional_directions_draw_their_own_masks", T_REG],
       (LAYERS + "bidirectional.py", "reset=reset, key=k_f)", "reset=reset, key=k_b)"),
       (LAYERS + "*.py", "key=k_f)", "key=k_b)")),
    _m("stack-layers-share-a-key", "stack: every layer gets the first layer's key",
       [T_REG + "::test_stacked_layers_draw_their_own_masks", T_REG],
       (LAYERS + "stack.py", '("key", keys[k])', '("key", keys[0])')),
    _m("stack-dropout-not-rescaled",
       "stack(dropout=p): kept activations are not divided by 1 - p",
       [T_REG + "::test_stack_dropout_between_layers", T_REG],
       (LAYERS + "stack.py", "xs / jnp.asarray(1 - dropout, xs.dtype)", "xs")),
    _m("recurrent-dropout-not-rescaled",
       "recurrent_dropout: the mask is not divided by 1 - p",
       [T_REG + "::test_recurrent_dropout_against_numpy", T_REG],
       (LAYERS + "rnn.py",
        "h_mask = keep.astype(h.dtype) / jnp.asarray(1 - recurrent_dropout, h.dtype)",
        "h_mask = keep.astype(h.dtype)"),
       (LAYERS + "*.py", "keep.astype(h.dtype) / jnp.asarray(1 - recurrent_dropout, h.dtype)",
        "keep.astype(h.dtype)")),
    _m("fused-tangent-drops-dropout-mask",
       "fused tangent scan: dh_{t-1} W_h without the recurrent dropout mask",
       [T_REG + "::test_recurrent_dropout_gradients_match_numpy", T_TRANSFORMS
        + "::test_options_on_the_fused_path_match_the_reference"],
       (ENGINE + "fused.py", "product.recur(params, _times(product.hidden(dc), h_mask))",
        "product.recur(params, product.hidden(dc))"),
       (ENGINE + "*.py", "product.recur(params, _times(product.hidden(dc), h_mask))",
        "product.recur(params, product.hidden(dc))")),
    _m("zoneout-mask-inverted", "zoneout: True in the mask takes the new value",
       [T_REG + "::test_zoneout_masks_per_step_with_the_right_rate", T_REG],
       (ENGINE + "steps.py", "jnp.where(d, old, new)", "jnp.where(d, new, old)"),
       (ENGINE + "*.py", "jnp.where(d, old, new)", "jnp.where(d, new, old)")),
    _m("zoneout-expectation-swapped",
       "zoneout without a key: (1 - r) c_{t-1} + r c_t instead of r c_{t-1} + (1 - r) c_t",
       [T_REG + "::test_lstm_zoneout_expectation_against_numpy", T_REG],
       (ENGINE + "steps.py", "r * old + (1 - r) * new", "(1 - r) * old + r * new"),
       (ENGINE + "*.py", "r * old + (1 - r) * new", "(1 - r) * old + r * new")),
    # --- The in-place and narrow inference loops. ----------------------------
    _m("in-place-block-order-under-reverse",
       "in-place loop: a block's steps run first to last when reversed",
       [T_TRANSFORMS + "::test_the_in_place_loop_matches_a_python_loop", T_LAYERS],
       (ENGINE + "steps.py", "for j in (range(block - 1, -1, -1) if reverse else range(block)):",
        "for j in range(block):"),
       (ENGINE + "*.py", "(range(block - 1, -1, -1) if reverse else range(block))",
        "range(block)")),
    _m("in-place-write-offset", "in-place loop: block i written at step i, not i * block",
       [T_TRANSFORMS + "::test_the_in_place_loop_matches_a_python_loop", T_LAYERS],
       (ENGINE + "steps.py", "write(ys, y_block, i * block)", "write(ys, y_block, i)"),
       (ENGINE + "*.py", "write(ys, y_block, i * block)", "write(ys, y_block, i)")),
    _m("in-place-read-offset", "in-place loop: block i read from step i, not i * block",
       [T_TRANSFORMS + "::test_the_in_place_loop_matches_a_python_loop", T_LAYERS],
       (ENGINE + "steps.py", "jax.lax.dynamic_slice_in_dim(a, i * block, block)",
        "jax.lax.dynamic_slice_in_dim(a, i, block)"),
       (ENGINE + "*.py", "dynamic_slice_in_dim(a, i * block, block)",
        "dynamic_slice_in_dim(a, i, block)")),
    _m("wide-inference-form-reversed",
       "inference batching rule: batches wider than narrow_max_batch run reversed",
       [T_TRANSFORMS + "::test_both_forms_of_the_forward_loop_match_the_reference"
        "[lstm-narrow-up-to-1]",
        T_TRANSFORMS + "::test_both_forms_of_the_forward_loop_match_the_reference"
        "[narrow-up-to-1-lstm-forward]",
        T_TRANSFORMS + "::test_both_forms_of_the_forward_loop_match_the_reference"
        "[gru-narrow-up-to-1]",
        T_TRANSFORMS + "::test_both_forms_of_the_forward_loop_match_the_reference"
        "[narrow-up-to-1-gru-forward]",
        T_TRANSFORMS + "::test_every_transformation_matches_plain_autodiff"
        "[lstm-lengths-narrow-up-to-1]"],
       (ENGINE + "fused.py", "form = narrow if axis_size <= static.narrow_max_batch else static",
        "form = (narrow if axis_size <= static.narrow_max_batch\n"
        "            else static._replace(reverse=not static.reverse))"),
       (ENGINE + "*.py", "narrow if axis_size <= static.narrow_max_batch else static",
        "(narrow if axis_size <= static.narrow_max_batch\n"
        "            else static._replace(reverse=not static.reverse))"),
       (ENGINE + "inference.py", "            else static)",
        "            else static._replace(reverse=not static.reverse))")),
    # --- bf16 accumulation. --------------------------------------------------
    _m("bf16-accumulating-dot", "16-bit products accumulate in bf16, then cast to float32",
       ["tests/test_dtypes.py::test_bfloat16_products_accumulate_in_float32"],
       ("jaxrnn/_src/checks.py",
        "return jnp.matmul(x.astype(w.dtype), w, preferred_element_type=jnp.float32)",
        "return jnp.matmul(x.astype(w.dtype), w).astype(jnp.float32)")),
    # --- 2-D directions. -----------------------------------------------------
    _m("2d-reverse-axes-swapped", "rnn2d: reverse=(rows, cols) reverses (cols, rows)",
       [T_TWO_D + "::test_reverse_is_flip_run_flip", T_TWO_D],
       (ENGINE + "wavefront.py",
        "xs = reverse_region(reverse_region(xs, h, reverse[0], 0), w, reverse[1], 1)",
        "xs = reverse_region(reverse_region(xs, h, reverse[1], 0), w, reverse[0], 1)")),
    _m("2d-reverse-rows-not-restored", "rnn2d: reversed rows are not flipped back in ys",
       [T_TWO_D + "::test_reverse_is_flip_run_flip", T_TWO_D],
       (ENGINE + "wavefront.py",
        "ys = reverse_region(reverse_region(ys, h, reverse[0], 0), w, reverse[1], 1)",
        "ys = reverse_region(ys, w, reverse[1], 1)")),
    _m("2d-reverse-whole-axis", "rnn2d: a reversed axis flips the whole image, not the region",
       [T_TWO_D + "::test_shape_with_junk_equals_cropped_image", T_TWO_D],
       (ENGINE + "wavefront.py", "jnp.where(k < extent, extent - 1 - k, k)",
        "jnp.where(k < extent, a.shape[axis] - 1 - k, k)")),
    _m("wavefront-tall-neighbours-swapped",
       "wavefront on a tall image (transposed): up and left carries not swapped back",
       [T_TWO_D + "::test_wavefront_equals_double_scan", T_TWO_D],
       (ENGINE + "wavefront.py", "step(carries[::-1], x)", "step(carries, x)")),
    # --- Checkpoints. --------------------------------------------------------
    _m("checkpoint-leaf-order", "restore_checkpoint: leaves restored in reversed order",
       ["tests/test_checkpoint.py::test_round_trip_is_bit_exact", "tests/test_checkpoint.py"],
       ("jaxrnn/_src/training/checkpoint.py",
        "return jax.tree_util.tree_unflatten(treedef, out), int(manifest[\"step\"])",
        "return jax.tree_util.tree_unflatten(treedef, out[::-1]), int(manifest[\"step\"])"),
       ("jaxrnn/_src/training/*.py", "tree_unflatten(treedef, out)",
        "tree_unflatten(treedef, out[::-1])")),
    _m("checkpoint-damaged-file-unchecked",
       "restore_checkpoint: a damaged file raises the raw zipfile/numpy error",
       ["tests/test_checkpoint.py::test_truncated_file_names_it_and_the_earlier_steps",
        "tests/test_checkpoint.py"],
       ("jaxrnn/_src/training/checkpoint.py",
        "except Exception as err:  # noqa: BLE001 - zipfile",
        "except ZeroDivisionError as err:  # noqa: BLE001 - zipfile")),
    # --- Interop gate orders. ------------------------------------------------
    _m("keras-gru-gate-order", "from_keras: GRU blocks kept as (z, r, h) instead of (r, z, n)",
       ["tests/test_interop_keras.py::test_gate_layout", "tests/test_interop_keras.py"],
       (INTEROP + "keras.py", "return jnp.concatenate([r, z, h], axis=-1)",
        "return jnp.concatenate([z, r, h], axis=-1)")),
    _m("flax-lstm-gate-order", "from_flax: LSTM gates concatenated as (f, i, g, o)",
       ["tests/test_interop_flax.py::test_lstm_layout_and_carry", "tests/test_interop_flax.py"],
       (INTEROP + "flax.py", 'gates = "ifgo"', 'gates = "figo"')),
    _m("torch-gate-blocks-rotated",
       "from_torch: weight_ih's gate blocks rotated by one (i, f, g, o -> o, i, f, g)",
       ["tests/test_interop_torch.py::test_matches_torch_float32", "tests/test_interop_torch.py"],
       (INTEROP + "torch.py",
        'W_x = _to_jax(get("weight_ih"), "weight_ih" + s, transpose=True)',
        'W_x = jnp.roll(_to_jax(get("weight_ih"), "weight_ih" + s, transpose=True),\n'
        "                     spec.hidden_size, axis=-1)")),
    _m("torch-directions-swapped",
       "from_torch: a bidirectional layer's forward and backward params swapped",
       ["tests/test_interop_torch.py::test_matches_torch_float32", "tests/test_interop_torch.py"],
       (INTEROP + "torch.py", "layers_lib.BidirectionalParams(*directions)",
        "layers_lib.BidirectionalParams(*directions[::-1])"),
       (INTEROP + "*.py", "BidirectionalParams(*directions)",
        "BidirectionalParams(*directions[::-1])")),
    # --- Decoding and deployment. ------------------------------------------
    _m("beam-no-length-penalty", "beam_search: alive hypotheses ranked without the length penalty",
       ["tests/test_beam_search.py"],
       ("jaxrnn/_src/decoding/*.py", "alive_raw / penalty)", "alive_raw)")),
    _m("beam-carries-not-reordered", "beam_search: the carries stay in place when beams reorder",
       ["tests/test_beam_search.py"],
       ("jaxrnn/_src/decoding/*.py",
        "carries = jax.tree_util.tree_map(lambda x: jnp.take(x, parent, axis=0), carries)",
        "carries = carries")),
    _m("beam-end-token-ignored", "beam_search: emitting end_token does not end a hypothesis",
       ["tests/test_beam_search.py"],
       ("jaxrnn/_src/decoding/*.py", "finished[parent] | (token == end_token)",
        "finished[parent]")),
    _m("ctc-prefixes-not-merged", "ctc_beam_search: equal prefixes are kept twice, not merged",
       ["tests/test_ctc.py"],
       ("jaxrnn/_src/decoding/*.py", "extend = jnp.where(merged, neg_inf, extend)",
        "extend = extend")),
    _m("ctc-repeat-from-total", "ctc_beam_search: a repeated label extends from p_nonblank too",
       ["tests/test_ctc.py"],
       ("jaxrnn/_src/decoding/*.py", "jnp.where(repeat, log_pb[:, None], log_total[:, None])",
        "log_total[:, None]")),
    _m("ctc-greedy-repeats-kept", "ctc_greedy_decode: repeats are not merged",
       ["tests/test_ctc.py"],
       ("jaxrnn/_src/decoding/*.py", "(best != blank) & (best != previous)", "(best != blank)")),
    _m("ctc-padding-leaks", "ctc_loss: padded frames (NaN) reach the loss",
       ["tests/test_ctc.py"],
       ("jaxrnn/_src/decoding/*.py",
        "return jnp.where(valid[:, None], logits, jnp.zeros((), logits.dtype)), valid",
        "return logits, valid")),
    _m("carries-before-the-step", "return_carries: the carry before each step, not after it",
       ["tests/test_deployment.py"],
       (ENGINE + "steps.py", "      y = (y, new_c)", "      y = (y, c)")),
    _m("as-cell-steps-reversed", "as_cell: a reversed rnn is stepped as if causal",
       ["tests/test_deployment.py"],
       (LAYERS + "as_cell.py", 'if config["reverse"]:', "if False:")),
    _m("export-platforms-share-settings",
       "every platform's branch takes the tracing backend's settings",
       ["tests/test_deployment.py"],
       (ENGINE + "settings.py", "*args, **{platform: functools.partial(fn, s) for",
        "*args, **{platform: functools.partial(fn, current()) for")),
    _m("export-namedtuples-unregistered", "the public NamedTuples are not registered for export",
       ["tests/test_deployment.py"],
       ("jaxrnn/_src/serialization.py",
        'jax.export.register_namedtuple_serialization(cls, serialized_name=f"jaxrnn.{cls.__name__}")',
        "pass")),
    _m("adapters-drop-reset", "the framework adapters drop reset=",
       ["tests/test_adapters.py::test_reset_passes_through"],
       ("jaxrnn/_src/adapters/common.py", '    options["reset"] = reset', "    pass")),
    _m("linear-cell-output-dropped", "linear_cell: the user's output is ignored (y = h)",
       ["tests/test_linear_cell.py"],
       (CELLS + "linear.py", "             else _over_steps(lambda params, h, x: output(params, h, x)))",
        "             else (lambda params, hs, xs: hs))")),
    # --- Today's recurrences. -----------------------------------------------
    _m("mamba-conv-kernel-reversed", "mamba: the convolution kernel in the wrong order",
       ["tests/test_mamba.py::test_forward_and_step_match_mambapy"],
       (CELLS + "mamba.py", "jnp.sum(common.mul(windows, params.conv_w), axis=-2)",
        "jnp.sum(common.mul(windows, params.conv_w[::-1]), axis=-2)")),
    _m("window-reset-reads-carry", "window: after a reset the window reads the carry's buffer",
       ["tests/test_mamba.py::test_every_method_matches_a_loop_over_cell_apply"],
       (ENGINE + "window.py", "jnp.take(initial_buffer, index, axis=0), before)",
        "jnp.take(buffer, index, axis=0), before)")),
    _m("window-reverse-padding-ignored", "window: a reversed scan's leading padding is not skipped",
       ["tests/test_mamba.py::test_every_method_matches_a_loop_over_cell_apply"],
       (ENGINE + "window.py",
        "lead = 0 if valid is None or not reverse else num_steps - jnp.sum(valid.astype(jnp.int32))",
        "lead = 0")),
    _m("window-final-buffer-off-by-one", "window: the final buffer ends one step early",
       ["tests/test_mamba.py::test_every_method_matches_a_loop_over_cell_apply"],
       (ENGINE + "window.py", "index = 0 if reverse else jnp.maximum(count - 1, 0)",
        "index = 0 if reverse else jnp.maximum(count - 2, 0)")),
    _m("window-step-keeps-oldest", "window: one step's buffer drops the newest input",
       ["tests/test_mamba.py::test_forward_and_step_match_mambapy"],
       (ENGINE + "window.py", "return self.convolve(params, zx_t, window_t), rest, window_t[1:]",
        "return self.convolve(params, zx_t, window_t), rest, window_t[:-1]")),
    _m("mlstm-chunk-reset-keeps-history", "mlstm chunkwise: a reset does not cut the chunk's first state",
       ["tests/test_mlstm.py::test_every_method_equals_a_loop_over_cell_apply"],
       (ENGINE + "chunkwise.py", "    log_prev = jnp.where(segment == 0, b, -jnp.inf)",
        "    log_prev = b")),
    _m("mlstm-chunk-decay-unstabilised", "mlstm chunkwise: a chunk's decay drops its first stabiliser",
       ["tests/test_mlstm.py::test_every_method_equals_a_loop_over_cell_apply"],
       (ENGINE + "chunkwise.py", "  decay = jnp.exp(log_decay + m_first - m_next)",
        "  decay = jnp.exp(log_decay - m_next)")),
    _m("mlstm-forget-stale-stabiliser", "mlstm step: the forget gate ignores m_{t-1}",
       ["tests/test_mlstm.py::test_cell_apply_equals_mlstm_kernels_native_step"],
       (CELLS + "mlstm.py", "  f_t, i_t = jnp.exp(log_f + m - m_t), jnp.exp(i - m_t)",
        "  f_t, i_t = jnp.exp(log_f - m_t), jnp.exp(i - m_t)")),
    _m("mlstm-chunk-padding-adds", "mlstm chunkwise: padded steps add their terms",
       ["tests/test_mlstm.py::test_every_method_equals_a_loop_over_cell_apply"],
       (ENGINE + "chunkwise.py",
        "    c = jnp.where(chunked(valid, False, heads=False)[None], c, -jnp.inf)", "    pass")),
    _m("slstm-first-step-stabiliser", "slstm: m_t = max(ĩ, m + log σ(f̃)) also from a zero normaliser",
       ["tests/test_slstm.py::test_equals_xlstm_slstm_forward_from_zero_and_random_states"],
       (CELLS + "slstm.py", "m_t = jnp.where(first, i_raw, jnp.maximum(i_raw, log_f_m))",
        "m_t = jnp.maximum(i_raw, log_f_m)")),
    _m("slstm-head-major-product", "slstm: the block product laid out head-major, not gate-major",
       ["tests/test_slstm.py::test_equals_xlstm_slstm_forward_from_zero_and_random_states"],
       (CELLS + "slstm.py", "jnp.swapaxes(z, -3, -2)", "z")),
    _m("slstm-forget-gate-unclipped", "slstm: the forget gate not clipped at 1 (first step)",
       ["tests/test_slstm.py::test_equals_xlstm_slstm_forward_from_zero_and_random_states"],
       (CELLS + "slstm.py", "i_t, f_t = jnp.minimum(a_t, one), jnp.minimum(e_t, one)",
        "i_t, f_t = jnp.minimum(a_t, one), e_t")),
    _m("slstm-tangent-stabiliser", "slstm: the stabiliser's tangent ignores which term is the max",
       ["tests/test_slstm.py::test_tangent_is_the_jvp_of_pointwise"],
       (CELLS + "slstm.py", "return SLSTMState(dh, dc, dn, dl + w * u), dh",
        "return SLSTMState(dh, dc, dn, dl + u), dh")),
    _m("rg-lru-reset-normalised", "rg_lru: a reset step keeps the normaliser sqrt(1 - a^2)",
       ["tests/test_rg_lru.py"],
       (CELLS + "rg_lru.py", "input_size=lambda params: H, restart=restart, output_size=H,",
        "input_size=lambda params: H, output_size=H,")),
    _m("rg-lru-sqrt-unbounded", "rg_lru: the normaliser's derivative is not bounded",
       ["tests/test_rg_lru.py"],
       (CELLS + "rg_lru.py", "floor = jnp.asarray(1 / (4 * MAX_SQRT_GRADIENT ** 2), x.dtype)",
        "floor = jnp.asarray(0.0, x.dtype)")),
    _m("parallel-forward-tangent-of-zx-dropped",
       "the associative scan's custom JVP drops the tangent of the inputs' projections",
       ["tests/test_transformations.py::test_every_transformation_matches_plain_autodiff"],
       ("jaxrnn/_src/engine/linear.py", "return _batch_major(*jax.jvp(sequential, primals, tangents))",
        "return _batch_major(*jax.jvp(sequential, primals, tangents[:2] + (0 * tangents[2],) + tangents[3:]))")),
    _m("linear-restart-ignored", "the linear engine ignores a cell's restart coefficients",
       ["tests/test_rg_lru.py"],
       ("jaxrnn/_src/engine/linear.py",
        "a_r, b_r = (a, b) if linear.restart is None else linear.restart(params, zx)",
        "a_r, b_r = (a, b)")),
    # --- Argument checks. ----------------------------------------------------
    _m("number-check-bool-guard", "the shared number check accepts bools (hidden_size=True)",
       ["tests/test_errors.py::test_bad_sizes_and_options"],
       ("jaxrnn/_src/checks.py", "if isinstance(value, bool) or not isinstance(value, kind):",
        "if not isinstance(value, kind):")),
)


# ---------------------------------------------------------------------------
# Applying a mutant.


def _files(root: pathlib.Path, pattern: str) -> list[pathlib.Path]:
  if any(ch in pattern for ch in "*?["):
    return sorted(p for p in root.glob(pattern) if p.is_file())
  path = root / pattern
  return [path] if path.is_file() else []


def find_edit(root: pathlib.Path, mutant: Mutant) -> Optional[tuple[pathlib.Path, str]]:
  """The first of ``mutant``'s edits that applies under ``root``: ``(file, new text)``.

  An edit applies when its snippet occurs exactly once among the files its
  pattern names and the edited file still parses.
  """
  for edit in mutant.edits:
    hits = []
    for path in _files(root, edit.file):
      text = path.read_text(encoding="utf-8")
      count = text.count(edit.snippet)
      if count:
        hits.append((path, text, count))
    if len(hits) != 1 or hits[0][2] != 1:
      continue
    path, text, _ = hits[0]
    new = text.replace(edit.snippet, edit.replacement)
    try:
      ast.parse(new)
    except SyntaxError:
      continue
    return path, new
  return None


def _ignores_all(path: pathlib.Path) -> bool:
  return path.is_file() and "*" in path.read_text(encoding="utf-8").split()


def _walk_unignored(root: pathlib.Path) -> list[str]:
  """Files under ``root`` that its top-level ``.gitignore`` does not ignore (for a
  tree that is no longer a git checkout, e.g. a pruned worktree)."""
  ignore = root / ".gitignore"
  patterns = [".git/"] + [
      line.strip() for line in (ignore.read_text(encoding="utf-8").splitlines()
                                if ignore.is_file() else [])
      if line.strip() and not line.startswith("#")]
  def ignored(rel: pathlib.PurePath, is_dir: bool) -> bool:
    for pattern in patterns:
      if pattern.endswith("/") and not is_dir:
        continue
      pattern = pattern.rstrip("/")
      if "/" in pattern.lstrip("/"):
        if fnmatch.fnmatch(str(rel), pattern.lstrip("/")):
          return True
      elif fnmatch.fnmatch(rel.name, pattern):
        return True
    return False
  files = []
  for directory, dirs, names in os.walk(root):
    base = pathlib.Path(directory)
    # A folder whose own .gitignore ignores everything in it (caches do that).
    dirs[:] = [d for d in dirs if not ignored((base / d).relative_to(root), True)
               and not _ignores_all(base / d / ".gitignore")]
    files += [str((base / n).relative_to(root)) for n in names
              if not ignored((base / n).relative_to(root), False)]
  return files


_NOTED: set[pathlib.Path] = set()


def copy_repository(root: pathlib.Path, dest: pathlib.Path) -> None:
  """Copies the tracked and untracked-but-not-ignored files of ``root`` to ``dest``."""
  listing = subprocess.run(
      ["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
      capture_output=True)
  if listing.returncode == 0:
    listed = listing.stdout.decode("utf-8").split("\0")
  else:
    if root not in _NOTED:
      _NOTED.add(root)
      print(f"note: {root} is not a git checkout ({listing.stderr.decode().strip()}); "
            "copying the files its .gitignore does not ignore", file=sys.stderr)
    listed = _walk_unignored(root)
  for name in filter(None, listed):
    source = root / name
    if not (source.is_file() or source.is_symlink()):
      continue  # deleted in the working tree, or a submodule
    target = dest / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target, follow_symlinks=False)


# ---------------------------------------------------------------------------
# Running the suite.

# Loaded with ``-p`` from the temporary folder: moves the first tests to the
# front (a stable sort: what is collected does not change), and records the
# first failing test and, per process, the jaxrnn that was imported.
PLUGIN = textwrap.dedent('''
    import json, os, sys, time
    import pytest

    FIRST = json.loads(os.environ.get("MUTANTS_FIRST", "[]"))
    REPORT = os.environ["MUTANTS_REPORT"]


    def _write(**entry):
      with open(REPORT, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\\n")


    def _matches(nodeid, prefix):
      if nodeid == prefix:
        return True
      if prefix.endswith("]"):  # also with more parameters: [a-b] matches [a-b-c]
        return nodeid.startswith(prefix[:-1] + "-")
      return nodeid.startswith(prefix) and (
          nodeid[len(prefix)] in ":[" or prefix.endswith(("[", "-")))


    def _rank(nodeid):
      for k, prefix in enumerate(FIRST):
        if _matches(nodeid, prefix):
          return k
      return len(FIRST)


    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(session, config, items):
      items.sort(key=lambda item: _rank(item.nodeid))


    def pytest_collection_finish(session):
      module = sys.modules.get("jaxrnn")
      _write(kind="collected", worker=os.environ.get("PYTEST_XDIST_WORKER", "main"),
             count=len(session.items), first=[i.nodeid for i in session.items[:3]],
             jaxrnn=getattr(module, "__file__", None))


    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(node, ids):
      _write(kind="collected", worker="controller:" + str(node.gateway.id), count=len(ids),
             first=list(ids[:3]), jaxrnn=None)


    def _failure(report, when):
      text = getattr(report, "longreprtext", "") or ""
      lines = [line for line in text.splitlines() if line.strip()]
      tail = next((line for line in lines if line.startswith("E ")),
                  lines[-1] if lines else "")
      _write(kind="failed", nodeid=report.nodeid, when=when, time=time.time(),
             message=tail.strip()[:300])


    def pytest_runtest_logreport(report):
      if report.failed:
        _failure(report, report.when)


    def pytest_collectreport(report):
      if report.failed:
        _failure(report, "collect")
''')


class Result(NamedTuple):
  name: str
  file: str
  status: str  # "caught", "not caught", "did not apply", "timeout", "error"
  first_failure: str
  message: str
  seconds: float
  collected: int


# Seconds a run may go on after its first failure before it is stopped, and
# the return code then reported.
STOP_AFTER_FAILURE = 10
STOPPED = -1


def _stop(process: subprocess.Popen) -> None:
  """Stops pytest and its workers (its own process group)."""
  os.killpg(process.pid, signal.SIGTERM)
  try:
    process.wait(timeout=30)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _read_report(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  entries = []
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      entries.append(json.loads(line))
    except json.JSONDecodeError:
      pass  # a line still being written
  return entries


def run_suite(copy: pathlib.Path, python: str, jobs: int, first, timeout: Optional[float],
              plugin_dir: pathlib.Path, log: Optional[pathlib.Path],
              extra: tuple[str, ...] = ()) -> tuple[Optional[int], list[dict], float]:
  """Runs `make test`'s pytest command in ``copy``; ``(returncode or None on timeout,
  report entries, seconds)``."""
  report = plugin_dir / "report.jsonl"
  report.unlink(missing_ok=True)
  env = dict(os.environ, **ENV)
  env.pop("PYTEST_ADDOPTS", None)
  env["PYTHONPATH"] = os.pathsep.join([str(copy), str(plugin_dir)])
  env["MUTANTS_FIRST"] = json.dumps(list(first))
  env["MUTANTS_REPORT"] = str(report)
  command = [python, *PYTEST_ARGS, "-p", "_mutants_plugin"]
  if jobs:
    command += ["-n", str(jobs)]
  command += list(extra)
  start = time.monotonic()
  out = open(log, "w", encoding="utf-8") if log else subprocess.DEVNULL
  try:
    process = subprocess.Popen(command, cwd=copy, env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    code: Optional[int] = None
    failed_at = None
    while True:
      try:
        code = process.wait(timeout=2)
        break
      except subprocess.TimeoutExpired:
        pass
      now = time.monotonic()
      if failed_at is None and any(e["kind"] == "failed" for e in _read_report(report)):
        failed_at = now
      # Under xdist, -x stops the suite only once every worker has run the
      # batch it was sent: after the first failure, wait a little, then stop.
      if failed_at is not None and now - failed_at > STOP_AFTER_FAILURE:
        _stop(process)
        code = STOPPED
        break
      if timeout is not None and now - start > timeout:
        _stop(process)
        break
  finally:
    if log:
      out.close()
  return code, _read_report(report), time.monotonic() - start


def _check_imports(entries: list[dict], copy: pathlib.Path) -> Optional[str]:
  """An error message unless every process that imported jaxrnn took the copy's."""
  paths = [(e["worker"], e["jaxrnn"]) for e in entries
           if e["kind"] == "collected" and e.get("jaxrnn")]
  if not paths and any(e["kind"] == "collected" for e in entries):
    return "no pytest process recorded which jaxrnn it imported"
  for worker, path in paths:
    if not pathlib.Path(path).resolve().is_relative_to(copy.resolve()):
      return f"{worker} imported {path}, not the copy's jaxrnn"
  return None


def run_mutant(mutant: Mutant, root: pathlib.Path, python: str, jobs: int,
               timeout: Optional[float], logs: Optional[pathlib.Path]) -> Result:
  with tempfile.TemporaryDirectory(prefix="jaxrnn-mutant-") as tmp:
    tmp_path = pathlib.Path(tmp)
    copy, plugin_dir = tmp_path / "repo", tmp_path / "plugin"
    copy.mkdir()
    plugin_dir.mkdir()
    (plugin_dir / "_mutants_plugin.py").write_text(PLUGIN, encoding="utf-8")
    copy_repository(root, copy)
    found = find_edit(copy, mutant)
    if found is None:
      return Result(mutant.name, "-", "did not apply", "", "", 0.0, 0)
    path, new = found
    path.write_text(new, encoding="utf-8")
    rel = str(path.relative_to(copy))
    log = logs / f"{mutant.name}.log" if logs else None
    code, entries, seconds = run_suite(copy, python, jobs, mutant.first, timeout, plugin_dir,
                                       log)
    collected = max((e["count"] for e in entries if e["kind"] == "collected"), default=0)
    wrong = _check_imports(entries, copy)
    if wrong:
      return Result(mutant.name, rel, "error", "", wrong, seconds, collected)
    failures = [e for e in entries if e["kind"] == "failed"]
    first = min(failures, key=lambda e: e["time"]) if failures else None
    message = next((e["message"] for e in failures
                    if first and e["nodeid"] == first["nodeid"] and e["message"]), "")
    if code is None:
      status = "timeout"
    elif code == 0:
      status = "not caught"
    elif code in (1, 2, STOPPED) and first is not None:
      status = "caught"
    else:
      status = "error"
      message = message or f"pytest exited with {code}"
    nodeid = first["nodeid"] if first else ""
    if first and first["when"] == "collect":
      nodeid += " (collection)"
    return Result(mutant.name, rel, status, nodeid, message, seconds, collected)


def collect_check(root: pathlib.Path, python: str, jobs: int, mutant: Mutant) -> None:
  """Shows that the reordered suite is the full one: counts with and without first tests."""
  with tempfile.TemporaryDirectory(prefix="jaxrnn-mutant-") as tmp:
    tmp_path = pathlib.Path(tmp)
    copy, plugin_dir = tmp_path / "repo", tmp_path / "plugin"
    copy.mkdir()
    plugin_dir.mkdir()
    (plugin_dir / "_mutants_plugin.py").write_text(PLUGIN, encoding="utf-8")
    copy_repository(root, copy)
    for first in ((), mutant.first):
      code, entries, seconds = run_suite(copy, python, jobs, first, None, plugin_dir, None,
                                         extra=("--collect-only",))
      print(f"first={list(first)}: exit {code}, {seconds:.0f} s")
      for entry in entries:
        print(f"  {entry}")
      wrong = _check_imports(entries, copy)
      print("  imports:", wrong or "every process imported the copy's jaxrnn")


# ---------------------------------------------------------------------------
# Command line.


def markdown(results: list[Result]) -> str:
  lines = ["| mutant | file | caught | first failing test | seconds |",
           "|---|---|---|---|---|"]
  for r in results:
    caught = "yes" if r.status == "caught" else f"**no** ({r.status})"
    test = f"`{r.first_failure}`" if r.first_failure else ""
    lines.append(f"| {r.name} | `{r.file}` | {caught} | {test} | {r.seconds:.0f} |")
  caught = sum(r.status == "caught" for r in results)
  lines.append("")
  lines.append(f"{caught} of {len(results)} caught.")
  return "\n".join(lines) + "\n"


def _default_python(root: pathlib.Path) -> str:
  for base in (root, REPO):
    candidate = base / ".venv" / "bin" / "python"
    if candidate.exists():
      return str(candidate)
  return sys.executable


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tests.mutants", description=__doc__.split("\n", 1)[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--root", type=pathlib.Path, default=REPO,
                      help="the repository to mutate (a copy of it)")
  parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
  parser.add_argument("--list", action="store_true", help="list the mutants and exit")
  parser.add_argument("--check", action="store_true",
                      help="report which mutants apply to --root, run no tests")
  parser.add_argument("--collect-check", action="store_true",
                      help="collect the suite with and without the first mutant's first "
                           "tests, and show the counts and the jaxrnn imported")
  parser.add_argument("--jobs", type=int, default=2, help="pytest -n (0: no xdist)")
  parser.add_argument("--timeout", type=float, default=None,
                      help="seconds per mutant before its run is stopped (default: none)")
  parser.add_argument("--python", default=None,
                      help="interpreter (default: --root's .venv, else this repository's)")
  parser.add_argument("--out", type=pathlib.Path, help="write the Markdown table here")
  parser.add_argument("--logs", type=pathlib.Path, help="keep each run's pytest output here")
  args = parser.parse_args(argv)
  root = args.root.resolve()
  python = args.python or _default_python(root)

  names = [m.name for m in MUTANTS]
  assert len(set(names)) == len(names), "mutant names must be unique"
  mutants = list(MUTANTS)
  if args.only:
    unknown = sorted(set(args.only) - set(names))
    if unknown:
      parser.error(f"--only: unknown mutants {unknown}; see --list")
    mutants = [m for m in MUTANTS if m.name in args.only]

  if args.list:
    for m in mutants:
      print(f"{m.name}: {m.bug}")
      print(f"    first: {' '.join(m.first)}")
    print(f"{len(mutants)} mutants")
    return 0
  if args.check:
    missing = []
    for m in mutants:
      found = find_edit(root, m)
      where = str(found[0].relative_to(root)) if found else "DID NOT APPLY"
      print(f"{m.name:40s} {where}")
      missing += [] if found else [m.name]
    print(f"{len(mutants) - len(missing)} of {len(mutants)} apply to {root}")
    return 1 if missing else 0
  if args.collect_check:
    collect_check(root, python, args.jobs, mutants[0])
    return 0

  if args.logs:
    args.logs.mkdir(parents=True, exist_ok=True)
  print(f"root {root}; python {python}; pytest -n {args.jobs}", flush=True)
  results = []
  for m in mutants:
    result = run_mutant(m, root, python, args.jobs, args.timeout, args.logs)
    results.append(result)
    print(f"{result.name:40s} {result.status:13s} {result.seconds:6.0f} s  "
          f"({result.collected} collected)  {result.first_failure}  {result.message[:120]}",
          flush=True)
  table = markdown(results)
  print(table)
  if args.out:
    args.out.write_text(table, encoding="utf-8")
  return 0 if all(r.status == "caught" for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
