"""The predictor of MaskDINO and DI-MaskDINO: query selection, DI, layer-0 prediction,
the decoder with BATO, per-layer heads.

MaskDINO is the predictor with DI and BATO off (one selection of ``num_queries`` tokens);
DI-MaskDINO turns on DI (first selection of ``first_selected_queries`` tokens, token
interaction, second selection of ``num_queries``) and BATO (``num_guiding_tokens`` guiding
tokens before decoder layer 1). Each switch works alone, as the paper's Tab. 4 needs.

The ablation switches of the paper's diagnostic tables, as this toolkit reads them (the
paper leaves the details open; in the official code's terms):

* selection stages (Tab. 7, 8): ``first_selected_queries`` = k1, then one token
  interaction + selection per entry of ``extra_selected_queries``, down to ``num_queries``;
  triple selection (600, 450, 300) is k1 = 600, extra = (450,), num_queries = 300.
* BATO guidance (Tab. 5): T_s1 = the first-selected tokens, T_s2 = the tokens DI's last
  selection keeps (the decoder's input queries), Q_bal = those queries after decoder layer
  0, whose cross-attention to the encoder tokens is the paper's residual Eq. 4 (the
  official model); the guiding tokens are the best-scored of the source, with the position
  embedding of their boxes. gui. = T_i is the model with DI off (Tab. 5's row equals
  Tab. 4's #3).
* guiding-token generation (Tab. 6): see :class:`BalanceAwareTokens`.
* position-token constraint (Tab. 3): the decoder's initial reference boxes (the position
  part of Q_bal) are fixed random boxes instead of the selected tokens' boxes, in training
  and evaluation.
* loss-weight constraint (Tab. 3): a criterion setting, ``LossWeights.detection_scale``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from dimaskdino.modeling.bato import BalanceAwareTokens
from dimaskdino.modeling.box_ops import BOX_RULES, inverse_sigmoid, mask_logits_to_boxes
from dimaskdino.modeling.decoder import DeformableDecoder
from dimaskdino.modeling.denoising import make_denoising_queries
from dimaskdino.modeling.di import DeImbalance
from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.levels import flatten_levels, level_positions
from dimaskdino.modeling.position import sine_box_embedding
from dimaskdino.modeling.selection import QuerySelection

GUIDANCE = ("qbal", "ts2", "ts1")
# decoder box initialisation: from the selected tokens' masks by a BOX_RULES rule, or "no":
# their encoder boxes
BOX_INITS = (*BOX_RULES, "no")


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
    first_selected_queries: int | None = None  # DI's k1; None: DI off
    # further token-interaction + selection stages between k1 and num_queries (the
    # selection-count study's triple selection (600, 450, 300) is (450,))
    extra_selected_queries: tuple[int, ...] = ()
    ti_layers: int = 2
    num_guiding_tokens: int | None = None      # BATO's guiding tokens; None: BATO off
    # what BATO's guiding tokens come from (Tab. 5): "qbal" the decoder's queries after
    # layer 0 (the official model), "ts2" the second-selected tokens, "ts1" the first-
    # selected tokens, "ti" the best encoder tokens
    bato_guidance: str = "qbal"
    # guiding-token generation (Tab. 6): guides = mask network + box (position) network of
    # the guiding queries; off: the guiding queries themselves
    guiding_token_generation: bool = True
    # position-token constraint (Tab. 3): the decoder's initial reference boxes are fixed
    # random boxes instead of the selected tokens' boxes
    random_position_tokens: bool = False
    denoising: bool = True                     # DN "seg": noised ground truths in training
    dn_num: int = 100
    dn_noise_scale: float = 0.4
    # the official decoder builds its attention with the constructor default of 8 heads
    # whatever MODEL.MaskDINO.NHEADS says, and 4 sampling points
    heads: int = 8
    points: int = 4

    def __post_init__(self) -> None:
        self.extra_selected_queries = tuple(self.extra_selected_queries)
        if self.bato_guidance not in GUIDANCE:
            raise ValueError(f"bato_guidance {self.bato_guidance!r}: choose one of "
                             f"{', '.join(GUIDANCE)} (the paper's gui.=Ti is DI off: "
                             "first_selected_queries=null)")
        if self.initialize_box_type not in BOX_INITS:
            raise ValueError(f"INITIALIZE_BOX_TYPE {self.initialize_box_type!r} is not "
                             f"supported; choose one of {', '.join(BOX_INITS)}")
        di = self.first_selected_queries is not None
        if not di and (self.extra_selected_queries or self.bato_guidance != "qbal"):
            raise ValueError("extra_selected_queries and bato_guidance ts1 / ts2 need DI "
                             "(first_selected_queries)")
        ks = (self.first_selected_queries, *self.extra_selected_queries, self.num_queries)
        if di and any(a < b for a, b in itertools.pairwise(ks)):
            raise ValueError(f"selection counts {ks} must not grow from stage to stage")

    @classmethod
    def from_official(cls, model: dict) -> PredictorConfig:
        """From the ``MODEL`` section of an official config."""
        maskdino, head = model["MaskDINO"], model["SEM_SEG_HEAD"]
        for key, supported in (("TWO_STAGE", True), ("INITIAL_PRED", True),
                               ("LEARN_TGT", False), ("ENFORCE_INPUT_PROJ", False)):
            if bool(maskdino.get(key, supported)) != supported:
                raise ValueError(f"MaskDINO.{key} {maskdino[key]!r} is not supported "
                                 f"(only {supported})")
        if head["CONVS_DIM"] != maskdino["HIDDEN_DIM"]:
            raise ValueError(f"SEM_SEG_HEAD.CONVS_DIM {head['CONVS_DIM']} != MaskDINO.HIDDEN_DIM "
                             f"{maskdino['HIDDEN_DIM']} (decoder input projections) is not "
                             "supported")
        di_maskdino = maskdino.get("TRANSFORMER_DECODER_NAME") == "DIMaskDINODecoder"
        box_init = maskdino.get("INITIALIZE_BOX_TYPE", "mask2box")
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
            first_selected_queries=maskdino["FIRST_SELECTED_QUERIES"] if di_maskdino else None,
            ti_layers=maskdino.get("TI_LAYERS", 2),
            num_guiding_tokens=maskdino["NUM_GUIDING_TOKENS"] if di_maskdino else None,
            denoising=maskdino.get("DN", "seg") != "no",
            dn_num=maskdino.get("DN_NUM", 100),
            dn_noise_scale=maskdino.get("DN_NOISE_SCALE", 0.4),
        )


class MaskDINOPredictor(nn.Module):
    """From encoder maps to class, box and mask predictions of every decoder layer.

    ``forward(multi_scale_features, mask_features)`` takes the encoder's maps (in its
    level order) and ``mask_features (B, D, H/4, W/4)`` and returns a dict:

    * ``memory``, ``spatial_shapes``, ``level_start_index``: the decoder's tokens, the
      encoder's levels last to first (as the official decoder flattens them);
    * ``selection``: :class:`QuerySelection`'s outputs (all tokens and the top-k, k = k1
      with DI, else ``num_queries``);
    * ``interm``: predictions of the selected tokens (``pred_logits (B, k, K)``,
      ``pred_boxes (B, k, 4)`` normalized cxcywh, ``pred_masks (B, k, H/4, W/4)``);
    * ``initial_boxes_unsigmoid (B, k, 4)``: their boxes by ``initialize_box_type``;
    * ``di`` (DI on): :class:`DeImbalance`'s outputs; ``di_extra``: those of the further
      selection stages (``extra_selected_queries``), in order;
    * ``refpoints_unsigmoid (B, Q, 4)`` and ``tgt (B, Q, C)``: the decoder's input queries;
    * ``bato`` (BATO on and >= 2 decoder layers): :class:`BalanceAwareTokens`' outputs;
    * ``layers``: ``dec_layers + 1`` dicts of ``pred_logits``, ``pred_boxes``, ``pred_masks``,
      layer 0 being the prediction from the decoder's input queries;
    * ``hidden``, ``references``: the decoder's outputs (see :class:`DeformableDecoder`);
    * ``denoising`` (training with ``targets``): the :class:`DenoisingQueries` and their
      per-layer predictions; every other output covers the matching queries only.
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
        if config.first_selected_queries is not None:
            self.di = DeImbalance(dim, config.dim_feedforward, config.ti_layers,
                                  config.dropout, config.heads)
        self.extra_di = nn.ModuleList(
            DeImbalance(dim, config.dim_feedforward, config.ti_layers, config.dropout,
                        config.heads) for _ in config.extra_selected_queries)
        if config.num_guiding_tokens is not None:
            self.bato = BalanceAwareTokens(dim, config.dim_feedforward,
                                           config.num_guiding_tokens, config.dropout,
                                           config.heads, config.guiding_token_generation)
        if config.random_position_tokens:
            # the position-token constraint: fixed random boxes (centres uniform in the
            # image, sides uniform in [0.05, 0.5]) replace the selected tokens' boxes;
            # drawn from a fixed seed, not saved, identical for every image and run
            rng = torch.Generator().manual_seed(0)
            boxes = torch.cat((torch.rand(config.num_queries, 2, generator=rng),
                               0.05 + 0.45 * torch.rand(config.num_queries, 2, generator=rng)),
                              dim=1)
            self.register_buffer("random_refpoints_unsigmoid", inverse_sigmoid(boxes),
                                 persistent=False)

    def predict_layer(self, hidden: torch.Tensor, mask_features: torch.Tensor | None,
                      boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Heads on ``hidden (B, Q, C)`` (no masks without ``mask_features``); ``boxes`` are
        passed through as ``pred_boxes``."""
        logits, masks = self.heads(hidden, mask_features)
        return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}

    def _select_further(self, tokens: torch.Tensor, boxes_unsigmoid: torch.Tensor,
                        out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """DI's token interaction + selection, once per further stage: ``tokens (B, k1, C)``
        and their boxes -> the kept ``(B, Q, C)`` and boxes ``(B, Q, 4)`` (inverse-sigmoid);
        stores ``out["di"]`` (and ``out["di_extra"]``)."""
        keeps = (*self.config.extra_selected_queries, self.config.num_queries)
        stages, results = [self.di, *self.extra_di], []
        for stage, keep in zip(stages, keeps, strict=True):
            results.append(stage(tokens, boxes_unsigmoid, keep, self.heads))
            tokens = results[-1]["content"]
            boxes_unsigmoid = inverse_sigmoid(results[-1]["selected_boxes"])
        out["di"] = results[0]
        if len(results) > 1:
            out["di_extra"] = results[1:]
        return tokens, boxes_unsigmoid

    def forward(self, multi_scale_features: list[torch.Tensor],
                mask_features: torch.Tensor, all_layer_masks: bool = True,
                targets: list[dict[str, torch.Tensor]] | None = None) -> dict:
        """See the class docstring. ``all_layer_masks=False`` predicts masks only where the
        official evaluation does (the selected tokens, for mask2box, and the last layer);
        the other layers' ``pred_masks`` are then None. ``targets`` (per image ``labels``
        and normalized cxcywh ``boxes``) add denoising queries in training mode."""
        config = self.config
        maps = multi_scale_features[::-1]
        memory, spatial_shapes, level_start_index = flatten_levels(maps)
        first_k = config.first_selected_queries or config.num_queries
        selection = self.selection(memory, spatial_shapes, first_k, self.heads)
        interm = self.predict_layer(selection["content"], mask_features,
                                    selection["boxes_unsigmoid"].sigmoid())
        if config.initialize_box_type in BOX_RULES:
            boxes_unsigmoid = mask_logits_to_boxes(interm["pred_masks"],
                                                   config.initialize_box_type)
        else:
            boxes_unsigmoid = selection["boxes_unsigmoid"].detach()
        tgt = selection["content"].detach()
        out = {"memory": memory, "spatial_shapes": spatial_shapes,
               "level_start_index": level_start_index, "selection": selection,
               "interm": interm, "initial_boxes_unsigmoid": boxes_unsigmoid}
        refpoints_unsigmoid = boxes_unsigmoid
        if config.first_selected_queries is not None:
            tgt, refpoints_unsigmoid = self._select_further(tgt, boxes_unsigmoid, out)
        if config.random_position_tokens:
            refpoints_unsigmoid = self.random_refpoints_unsigmoid.to(tgt).expand(
                tgt.shape[0], -1, -1)
        dn = None
        if self.training and targets is not None and config.denoising:
            dn = make_denoising_queries(targets, self.label_enc, config.num_queries,
                                        config.dn_num, config.dn_noise_scale)
        queries, query_boxes, self_attn_mask, pad = tgt, refpoints_unsigmoid, None, 0
        if dn is not None:
            queries = torch.cat((dn.content, tgt), dim=1)
            query_boxes = torch.cat((dn.boxes_unsigmoid, refpoints_unsigmoid), dim=1)
            self_attn_mask, pad = dn.attn_mask, dn.size
        last = config.dec_layers
        layers = [self.predict_layer(queries, mask_features if all_layer_masks or last == 0
                                     else None, query_boxes.sigmoid())]

        def guide(index: int, decoded: torch.Tensor, query_pos: torch.Tensor):
            if index != 1:
                return None
            memory_pos = torch.cat(level_positions(maps), dim=1)
            # guiding tokens come from the matching queries only (Q_bal, after layer 0), or
            # for Tab. 5's ablation from the first- or second-selected tokens
            candidates, candidate_pos = decoded[:, pad:], query_pos[:, pad:]
            if config.bato_guidance != "qbal":
                source = (selection["content"], boxes_unsigmoid) \
                    if config.bato_guidance == "ts1" else (tgt, refpoints_unsigmoid)
                candidates = source[0]
                candidate_pos = self.decoder.ref_point_head(
                    sine_box_embedding(source[1].sigmoid(), candidates.shape[-1]))
            out["bato"] = self.bato(candidates, candidate_pos, memory, memory_pos,
                                    spatial_shapes, level_start_index, mask_features,
                                    self.heads)
            return out["bato"]["memory"]

        hidden, references = self.decoder(
            queries, query_boxes, memory, spatial_shapes, level_start_index, self.heads,
            self_attn_mask=self_attn_mask,
            before_layer=guide if config.num_guiding_tokens is not None else None)
        for index, (hid, reference) in enumerate(zip(hidden, references[:-1])):
            # as in the official code, the heads see decoder_norm twice (the decoder's output
            # is already normalized) and the reported box refines the layer's input box
            # with the normalized output; BATO's refreshed mask features serve the layers
            # after the guided one
            features = out["bato"]["mask_features"] if "bato" in out and index > 0 \
                else mask_features
            if not all_layer_masks and index + 1 < last:
                features = None
            boxes = (self.heads.bbox_embed(hid) + inverse_sigmoid(reference)).sigmoid()
            layers.append(self.predict_layer(hid, features, boxes))
        if dn is not None:
            out["denoising"] = {"queries": dn, "layers": [
                {k: None if v is None else v[:, :pad] for k, v in layer.items()}
                for layer in layers]}
            layers = [{k: None if v is None else v[:, pad:] for k, v in layer.items()}
                      for layer in layers]
            hidden = [h[:, pad:] for h in hidden]
            references = [r[:, pad:] for r in references]
        out.update(refpoints_unsigmoid=refpoints_unsigmoid, tgt=tgt, layers=layers,
                   hidden=hidden, references=references)
        return out
