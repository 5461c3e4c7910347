"""Training: optimizer/schedule registries, clipping maths, the Lightning system, callbacks, runs."""
