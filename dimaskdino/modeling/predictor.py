"""The MaskDINO predictor: query selection, layer-0 prediction, decoder, per-layer heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dimaskdino.modeling.box_ops import inverse_sigmoid, mask_logits_to_boxes
from dimaskdino.modeling.decoder import DeformableDecoder
from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.selection import QuerySelection


@dataclass
class PredictorConfig:
    """The official ``MODEL.MaskDINO`` decoder options used at inference."""

    num_classes: int = 80
    hidden_dim: int = 256
    num_queries: int = 300
    dim_feedforward: int = 2048
    dec_layers: int = 9
    mask_dim: int = 256
    levels: int = 4
    dropout: float = 0.0
    initialize_box_type: str = "mask2box"
    # the official decoder builds its attention with the constructor default of 8 heads
    # whatever MODEL.MaskDINO.NHEADS says, and 4 sampling points
    heads: int = 8
    points: int = 4

    @classmethod
    def from_official(cls, model: dict) -> PredictorConfig:
        """From the ``MODEL`` section of an official config."""
        maskdino, head = model["MaskDINO"], model["SEM_SEG_HEAD"]
        if not maskdino.get("TWO_STAGE", True):
            raise ValueError("only two-stage MaskDINO (every official config) is supported")
        if not maskdino.get("INITIAL_PRED", True):
            raise ValueError("only INITIAL_PRED: true (every official config) is supported")
        if maskdino.get("LEARN_TGT", False):
            raise ValueError("LEARN_TGT: true is not supported")
        if head["CONVS_DIM"] != maskdino["HIDDEN_DIM"] or maskdino.get("ENFORCE_INPUT_PROJ"):
            raise ValueError("decoder input projections (CONVS_DIM != HIDDEN_DIM or "
                             "ENFORCE_INPUT_PROJ) are not supported")
        box_init = maskdino.get("INITIALIZE_BOX_TYPE", "mask2box")
        if box_init not in ("mask2box", "no"):
            raise ValueError(f"INITIALIZE_BOX_TYPE {box_init!r} is not supported")
        return cls(
            num_classes=head["NUM_CLASSES"],
            hidden_dim=maskdino["HIDDEN_DIM"],
            num_queries=maskdino["NUM_OBJECT_QUERIES"],
            dim_feedforward=maskdino["DIM_FEEDFORWARD"],
            dec_layers=maskdino["DEC_LAYERS"],
            mask_dim=head["MASK_DIM"],
            levels=head["TOTAL_NUM_FEATURE_LEVELS"],
            dropout=maskdino.get("DROPOUT", 0.0),
            initialize_box_type=box_init,
        )


def flatten_levels(maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten maps ``(B, C, H_l, W_l)`` into ``(B, S, C)`` tokens with their shapes ``(L, 2)``
    and level offsets ``(L,)``, in the given order."""
    spatial_shapes = torch.tensor([m.shape[-2:] for m in maps], dtype=torch.long,
                                  device=maps[0].device)
    level_start_index = torch.cat((spatial_shapes.new_zeros(1),
                                   spatial_shapes.prod(1).cumsum(0)[:-1]))
    tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
    return tokens, spatial_shapes, level_start_index


class MaskDINOPredictor(nn.Module):
    """From encoder maps to class, box and mask predictions of every decoder layer.

    ``forward(multi_scale_features, mask_features)`` takes the encoder's maps (high
    resolution first) and ``mask_features (B, D, H/4, W/4)`` and returns a dict:

    * ``memory``, ``spatial_shapes``, ``level_start_index``: the decoder's tokens, coarsest
      level first;
    * ``selection``: :class:`QuerySelection`'s outputs (all tokens and the top-k);
    * ``interm``: predictions of the selected tokens (``pred_logits (B, Q, K)``,
      ``pred_boxes (B, Q, 4)`` normalized cxcywh, ``pred_masks (B, Q, H/4, W/4)``);
    * ``refpoints_unsigmoid (B, Q, 4)`` and ``tgt (B, Q, C)``: the decoder's input queries;
    * ``layers``: ``dec_layers + 1`` dicts of ``pred_logits``, ``pred_boxes``, ``pred_masks``,
      layer 0 being the prediction from the decoder's input queries;
    * ``hidden``, ``references``: the decoder's outputs (see :class:`DeformableDecoder`).
    """

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_dim
        self.selection = QuerySelection(dim)
        self.heads = PredictionHeads(dim, config.num_classes, config.mask_dim)
        self.decoder = DeformableDecoder(dim, config.dim_feedforward, config.dec_layers,
                                         config.levels, config.dropout, config.heads,
                                         config.points)
        self.label_enc = nn.Embedding(config.num_classes, dim)  # denoising queries' labels

    def predict_layer(self, hidden: torch.Tensor, mask_features: torch.Tensor,
                      boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Heads on ``hidden (B, Q, C)``; ``boxes`` are passed through as ``pred_boxes``."""
        logits, masks = self.heads(hidden, mask_features)
        return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}

    def forward(self, multi_scale_features: list[torch.Tensor],
                mask_features: torch.Tensor) -> dict:
        memory, spatial_shapes, level_start_index = flatten_levels(multi_scale_features[::-1])
        selection = self.selection(memory, spatial_shapes, self.config.num_queries, self.heads)
        interm = self.predict_layer(selection["content"], mask_features,
                                    selection["boxes_unsigmoid"].sigmoid())
        if self.config.initialize_box_type == "mask2box":
            refpoints_unsigmoid = mask_logits_to_boxes(interm["pred_masks"])
        else:
            refpoints_unsigmoid = selection["boxes_unsigmoid"].detach()
        tgt = selection["content"].detach()
        layers = [self.predict_layer(tgt, mask_features, refpoints_unsigmoid.sigmoid())]
        hidden, references = self.decoder(tgt, refpoints_unsigmoid, memory, spatial_shapes,
                                          level_start_index, self.heads)
        for out, reference in zip(hidden, references[:-1]):
            # as in the official code, the heads see decoder_norm twice (the decoder's output
            # is already normalized) and the reported box refines the layer's input box
            # with the normalized output
            boxes = (self.heads.bbox_embed(out) + inverse_sigmoid(reference)).sigmoid()
            layers.append(self.predict_layer(out, mask_features, boxes))
        return {
            "memory": memory,
            "spatial_shapes": spatial_shapes,
            "level_start_index": level_start_index,
            "selection": selection,
            "interm": interm,
            "refpoints_unsigmoid": refpoints_unsigmoid,
            "tgt": tgt,
            "layers": layers,
            "hidden": hidden,
            "references": references,
        }
