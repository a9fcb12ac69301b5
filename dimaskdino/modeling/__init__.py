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
attention + FFN layers (encoder, DI,   :class:`post_norm.PostNormLayer`: post-norm, the
decoder, BATO)                         official parameter names and order
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
"""

from dimaskdino.modeling.bato import BalanceAwareTokens, BATOOutput
from dimaskdino.modeling.criterion import LossWeights, SetCriterion
from dimaskdino.modeling.decoder import DecoderOutput, DeformableDecoder
from dimaskdino.modeling.di import DeImbalance, DIOutput
from dimaskdino.modeling.encoder import EncoderConfig, MaskDINOEncoder
from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.model import DIMaskDINO, ModelConfig, ModelOutput, Prediction
from dimaskdino.modeling.predictor import DIMaskDINOPredictor, PredictorConfig, PredictorOutput
from dimaskdino.modeling.selection import QuerySelection, Selection, select_top_k

__all__ = [
    "BATOOutput", "BalanceAwareTokens", "DIMaskDINO", "DIMaskDINOPredictor", "DIOutput",
    "DeImbalance", "DecoderOutput", "DeformableDecoder", "EncoderConfig", "LossWeights",
    "MaskDINOEncoder", "ModelConfig", "ModelOutput", "Prediction", "PredictionHeads",
    "PredictorConfig", "PredictorOutput", "QuerySelection", "Selection", "SetCriterion",
    "select_top_k",
]
