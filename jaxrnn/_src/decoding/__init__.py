"""Decoding: searching a trained network's outputs (`beam`) and
connectionist temporal classification (`ctc`). Stepping a layer one step
at a time is `layers.as_cell`."""
