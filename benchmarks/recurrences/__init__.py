"""Today's recurrences against their authors' code, on the CPU.

``python -m benchmarks.recurrences [--quick] [--cells rg_lru mamba ...]``
(run by ``make bench``). For each cell, ``benchmarks/recurrences/<cell>.py``
builds, on the same weights and inputs, jaxrnn's layer and the reference
implementation(s) (`impls(task, batch, steps, hidden)`, jaxrnn first):

- ``rg_lru``: recurrentgemma 1.0.1's ``RGLRU`` (Flax, its linear scan);
- ``mamba``: mambapy 1.2.0's ``MambaBlock`` (PyTorch, its parallel scan);
- ``slstm``: xlstm 2.0.6's vanilla ``slstm_forward`` loop (PyTorch);
- ``mlstm``: mlstm_kernels 2.0.6's JAX native chunkwise form.

Grid: (B, T) = (8, 2048) and (32, 256), H = 256, tasks ``fwd`` (the loss
``sum(ys**2)``) and ``fwd+bwd`` (with its gradient in the parameters), as
in `benchmarks.peers`. The losses of the implementations are checked
against each other before timing; the implementations are then timed
interleaved in one process (`benchmarks.run.time_interleaved`: medians of
calls in a random order per round). Each line prints the medians and the
speed-up, reference time / jaxrnn time (> 1: jaxrnn is faster), against
the issue's target. A PyTorch peer whose first call takes over 30 s (it
compiles nothing) is timed by that one call. JSON goes to ``benchmarks/results/recurrences-*.json``.
"""
