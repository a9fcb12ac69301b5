"""Strict loading, the one routine every weight file goes into a model through: each entry
of the file finds a tensor of the same name and shape, each tensor of the model is given,
or one CheckpointError names the first mismatch."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from dimaskdino.checkpoint.files import CheckpointError


def load_strict(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                where: str, *, may_miss: Callable[[str], bool] | None = None,
                may_differ: Callable[[str], bool] | None = None,
                check: Callable[[str, torch.Tensor, torch.Tensor], str | None] | None = None,
                hint: str = "") -> list[str]:
    """Copy ``state`` into ``own`` (a module's ``state_dict()``, whose tensors are the
    module's own) after checking that they fit; returns the keys left as they were.

    A mismatch is a CheckpointError ``"<where>: <the mismatch>[; <hint>]"``: keys missing
    from ``state`` (but those ``may_miss`` allows) or not in ``own``, counted with an
    example of each; then the first entry of another shape (but those ``may_differ`` allows,
    which keep their values and are returned) or that ``check(key, value, own_value)``
    refuses (it returns the reason, or None).
    """
    suffix = f"; {hint}" if hint else ""
    missing = sorted(key for key in set(own) - set(state)
                     if may_miss is None or not may_miss(key))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{where}: {len(missing)} missing keys (e.g. {missing[:1]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:1]}){suffix}")
    kept = []
    for key, value in state.items():  # in the file's order
        expected = own[key]
        if tuple(value.shape) != tuple(expected.shape):
            if may_differ is None or not may_differ(key):
                raise CheckpointError(f"{where}: {key} has shape {tuple(value.shape)}, the "
                                      f"model expects {tuple(expected.shape)}{suffix}")
            kept.append(key)
        elif check is not None and (reason := check(key, value, expected)):
            raise CheckpointError(f"{where}: {reason}{suffix}")
    with torch.no_grad():
        for key, value in state.items():
            if key not in kept:
                own[key].copy_(value)
    return kept
