"""Drop-in modules for Flax linen, Flax NNX and Equinox (optional extras)."""
