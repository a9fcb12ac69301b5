"""The base of the typed stage outputs (selection, DI, BATO, decoder, predictor)."""

from __future__ import annotations

import dataclasses
from typing import Any


class StageOutput:
    """Read access by name for a dataclass of stage results.

    ``out["name"]``, ``"name" in out`` and ``out.get("name", default)`` read the field
    ``name``; a field holding None (a stage that did not run) counts as absent. The
    criterion and the layer probe read stage outputs this way, as they read the per-layer
    ``pred_logits / pred_boxes / pred_masks`` dicts.
    """

    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in {f.name for f in dataclasses.fields(self)} \
            and getattr(self, name) is not None

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default
