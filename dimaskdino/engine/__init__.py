"""Training loop, evaluation and distributed helpers."""
