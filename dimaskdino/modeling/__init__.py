"""MaskDINO and DI-MaskDINO: backbone, encoder, selection, DI, BATO, decoder, heads.

Where the paper (DI-MaskDINO, NeurIPS 2024) is in the code:

=====================================  ==================================================
paper                                  code
=====================================  ==================================================
Fig. 2, the whole pipeline             :class:`model.DIMaskDINO` (backbone, encoder,
                                       predictor); :meth:`predictor.DIMaskDINOPredictor
                                       .forward` reads in the figure's order
encoder tokens T_i                     :class:`encoder.MaskDINOEncoder`
first selection (top-k1 tokens)        :class:`selection.QuerySelection`, with the shared
                                       operator :func:`selection.select_top_k`
§3.2 DI, De-Imbalance (official        :class:`di.DeImbalance`: token interaction +
``oldm``)                              second selection
layer-0 prediction (Fig. 1's first     ``PredictorOutput.layers[0]``: the heads on the
layer)                                 decoder's input queries
decoder, residual cross-attention      :class:`decoder.DeformableDecoder`; its layer 0 is
(Eq. 4)                                Eq. 4's cross-attention, as in the official model
§3.3 BATO, balance-aware tokens        :class:`bato.BalanceAwareTokens`: guiding tokens,
optimization                           query-guided feature update, mask refresh
shared class / box / mask heads        :class:`heads.PredictionHeads`
losses (Hungarian matching, DN)        :class:`criterion.SetCriterion`,
                                       :mod:`matcher`, :mod:`denoising`
Tab. 3-9 ablation switches             :class:`predictor.PredictorConfig` fields:
                                       ``first_selected_queries`` (DI on, k1),
                                       ``extra_selected_queries`` (Tab. 7 triple
                                       selection), ``num_guiding_tokens`` (BATO on),
                                       ``bato_guidance`` (Tab. 5),
                                       ``guiding_token_generation`` (Tab. 6),
                                       ``random_position_tokens`` (Tab. 3 position-token
                                       constraint), ``dec_layers`` (Tab. 9); the
                                       loss-weight constraint is
                                       ``criterion.LossWeights.detection_scale``
=====================================  ==================================================

MaskDINO is the same model with DI and BATO off. Every stage returns a typed output
(:class:`selection.Selection`, :class:`di.DIOutput`, :class:`bato.BATOOutput`,
:class:`decoder.DecoderOutput`, :class:`predictor.PredictorOutput`); the per-layer
predictions stay DETR's ``pred_logits / pred_boxes / pred_masks`` dicts.

The names below are imported on first use (``dimaskdino.config`` imports the config
classes of this package, and the model imports the config).
"""

from __future__ import annotations

import importlib

# public name -> the module that defines it
_EXPORTS = {
    "DIMaskDINO": "model", "ModelOutput": "model", "Prediction": "model",
    "DIMaskDINOPredictor": "predictor", "PredictorConfig": "predictor",
    "PredictorOutput": "predictor",
    "MaskDINOEncoder": "encoder", "EncoderConfig": "encoder",
    "QuerySelection": "selection", "Selection": "selection", "select_top_k": "selection",
    "DeImbalance": "di", "DIOutput": "di",
    "BalanceAwareTokens": "bato", "BATOOutput": "bato",
    "DeformableDecoder": "decoder", "DecoderOutput": "decoder",
    "PredictionHeads": "heads",
    "SetCriterion": "criterion", "LossWeights": "criterion",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
