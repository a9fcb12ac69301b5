"""Refuse, before any work starts, an experiment that cannot run.

The first token selection picks ``first_selected_queries`` (DI on) or ``num_queries`` (DI
off) of the encoder's tokens with ``topk``, which fails mid-step when an image yields fewer
tokens. The count follows from the image size exactly as the model computes it: the batch
is padded to a multiple of ``size_divisibility``; every stride-2 convolution of the
backbone (7x7 pad 3, max-pool 3x3 pad 1, 3x3 pad 1 or 1x1) maps a side ``x`` to
``ceil(x / 2)``, so a level of stride ``s`` is ``ceil(side / s)`` on each side; every extra
encoder level is a 3x3 stride-2 convolution of the previous one, ``ceil(x / 2)`` again.

Training images are LSJ crops padded to ``data.image_size``; test images are resized to a
shorter side of ``data.test_short`` (the smallest such image is a square; ``test_short=0``
keeps the original size, known here for the synthetic data only). BATO's guiding tokens
are chosen among the ``num_queries`` decoder queries, so they cannot outnumber them.
"""

from __future__ import annotations

import math

from dimaskdino.config import ConfigError, ExperimentConfig, ModelConfig


def encoder_tokens(model: ModelConfig, height: int, width: int) -> int:
    """How many encoder tokens an image of ``height x width`` pixels gives ``model``."""
    divisor = max(model.size_divisibility, 1)
    height, width = (math.ceil(side / divisor) * divisor for side in (height, width))
    encoder = model.encoder
    strides = sorted(encoder.in_strides[name] for name in encoder.transformer_in_features)
    sizes = [(math.ceil(height / s), math.ceil(width / s)) for s in strides]
    for _ in range(encoder.total_levels - len(strides)):
        sizes.append(tuple(math.ceil(side / 2) for side in sizes[-1]))
    return sum(h * w for h, w in sizes)


def smallest_square(model: ModelConfig, tokens: int) -> int:
    """The smallest multiple of ``size_divisibility`` whose square image gives at least
    ``tokens`` encoder tokens."""
    step = max(model.size_divisibility, 1)
    low, high = 0, 1  # in steps: low gives too few tokens, high enough (bisected, as
    while encoder_tokens(model, high * step, high * step) < tokens:  # counts may be huge)
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if encoder_tokens(model, middle * step, middle * step) >= tokens:
            high = middle
        else:
            low = middle
    return high * step


def _test_size(config: ExperimentConfig) -> tuple[str, str, int, int] | None:
    """(what, the key to raise, height, width) of the smallest test image, when the config
    tells."""
    data = config.data
    if data.test_short > 0:
        side = min(data.test_short, data.test_max_size)
        return f"data.test_short={data.test_short}", "data.test_short", side, side
    if data.dataset == "synthetic":
        spec = data.synthetic
        return (f"the synthetic {spec.height}x{spec.width} images (data.test_short=0)",
                "data.test_short", spec.height, spec.width)
    return None


def check_runnable(config: ExperimentConfig) -> None:
    """ConfigError naming the key to change (and the value that works) if ``config``'s
    selection counts exceed its images' encoder tokens or its guiding tokens its queries."""
    model, predictor = config.model, config.model.predictor
    key = "first_selected_queries" if predictor.first_selected_queries is not None \
        else "num_queries"
    k = getattr(predictor, key)
    height, width = config.data.image_size
    sizes = [(f"data.image_size=[{height}, {width}]", "data.image_size", height, width)]
    if (test := _test_size(config)) is not None:
        sizes.append(test)
    for what, size_key, h, w in sizes:
        tokens = encoder_tokens(model, h, w)
        if tokens < k:
            side = smallest_square(model, k)
            fix = f"[{side}, {side}]" if size_key == "data.image_size" else side
            raise ConfigError(
                f"model.predictor.{key}={k} selects more tokens than the {tokens} encoder "
                f"tokens {what} yields; use {size_key}={fix} (the smallest that works) or "
                f"model.predictor.{key}<={tokens}")
    guides = predictor.num_guiding_tokens
    if guides is not None and guides > predictor.num_queries:
        raise ConfigError(f"model.predictor.num_guiding_tokens={guides} exceeds the "
                          f"{predictor.num_queries} queries they are chosen from; use "
                          f"model.predictor.num_guiding_tokens<={predictor.num_queries}")
