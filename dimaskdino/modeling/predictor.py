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

import dataclasses
import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from dimaskdino.config_ranges import (
    DROP_RATE,
    RangeError,
    at_least,
    check_ranges,
    each,
    one_of,
    ranged,
)
from dimaskdino.modeling.bato import BalanceAwareTokens, BATOOutput
from dimaskdino.modeling.box_ops import BOX_RULES, inverse_sigmoid, mask_logits_to_boxes
from dimaskdino.modeling.decoder import DecoderOutput, DeformableDecoder
from dimaskdino.modeling.denoising import DenoisingQueries, make_denoising_queries
from dimaskdino.modeling.di import DeImbalance, DIOutput
from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.levels import reverse_levels
from dimaskdino.modeling.outputs import StageOutput
from dimaskdino.modeling.selection import QuerySelection, Selection

GUIDANCE = ("qbal", "ts2", "ts1")
# checked before a run (dimaskdino.config_check)
TOKENS = "at most the encoder tokens of the smallest training or test image"
# decoder box initialisation: from the selected tokens' masks by a BOX_RULES rule, or "no":
# their encoder boxes
BOX_INITS = (*BOX_RULES, "no")


@dataclass
class PredictorConfig:
    """The official ``MODEL.MaskDINO`` decoder options used at inference."""

    num_classes: int = ranged(80, at_least(1))
    hidden_dim: int = ranged(256, at_least(1), note="equal to model.encoder.conv_dim")
    num_queries: int = ranged(300, at_least(1), note=TOKENS)
    dim_feedforward: int = ranged(2048, at_least(1))
    dec_layers: int = ranged(9, at_least(1))
    mask_dim: int = ranged(256, at_least(1), note="equal to model.encoder.mask_dim")
    levels: int = ranged(4, at_least(1), note="equal to model.encoder.total_levels")
    dropout: float = ranged(0.0, DROP_RATE)
    initialize_box_type: str = ranged("mask2box", one_of(*BOX_INITS))
    # DI's k1; None: DI off
    first_selected_queries: int | None = ranged(None, at_least(1), note=f"{TOKENS}; then "
                                                "extra_selected_queries and num_queries, "
                                                "none larger than the one before")
    # further token-interaction + selection stages between k1 and num_queries (the
    # selection-count study's triple selection (600, 450, 300) is (450,))
    extra_selected_queries: tuple[int, ...] = ranged((), each(at_least(1)),
                                                     note="needs first_selected_queries")
    ti_layers: int = ranged(2, at_least(1))
    # BATO's guiding tokens; None: BATO off
    num_guiding_tokens: int | None = ranged(None, at_least(1), note="at most num_queries")
    # what BATO's guiding tokens come from (Tab. 5): "qbal" the decoder's queries after
    # layer 0 (the official model), "ts2" the second-selected tokens, "ts1" the first-
    # selected tokens; "ti" the best encoder tokens is DI off (first_selected_queries=null)
    bato_guidance: str = ranged("qbal", one_of(*GUIDANCE),
                                note="ts1 and ts2 need first_selected_queries; the paper's "
                                "gui.=Ti is DI off (first_selected_queries=null)")
    # guiding-token generation (Tab. 6): guides = mask network + box (position) network of
    # the guiding queries; off: the guiding queries themselves
    guiding_token_generation: bool = True
    # position-token constraint (Tab. 3): the decoder's initial reference boxes are fixed
    # random boxes instead of the selected tokens' boxes
    random_position_tokens: bool = False
    denoising: bool = True                     # DN "seg": noised ground truths in training
    dn_num: int = ranged(100, at_least(1))
    dn_noise_scale: float = ranged(0.4, at_least(0))
    # the official decoder builds its attention with the constructor default of 8 heads
    # whatever MODEL.MaskDINO.NHEADS says, and 4 sampling points
    heads: int = ranged(8, at_least(1), note="a divisor of hidden_dim")
    points: int = ranged(4, at_least(1))

    def __post_init__(self) -> None:
        self.extra_selected_queries = tuple(self.extra_selected_queries)
        check_ranges(self)
        if self.hidden_dim % self.heads:
            raise RangeError(PredictorConfig, "heads", self.heads,
                             f"a divisor of hidden_dim ({self.hidden_dim})")
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


@dataclass
class DenoisingOutput(StageOutput):
    """The denoising queries of a training batch and their predictions at every layer (the
    per-layer dicts of :class:`PredictorOutput`, on the denoising queries)."""

    queries: DenoisingQueries
    layers: list[dict[str, torch.Tensor | None]]


@dataclass
class PredictorOutput(StageOutput):
    """:class:`DIMaskDINOPredictor`'s outputs, in the order they are made.

    * ``memory (B, S, C)``, ``spatial_shapes (L, 2)``, ``level_start_index (L,)``: the
      encoder's tokens in the decoder's level order (the encoder's last to first, as the
      official decoder flattens them);
    * ``selection``: the query selection (k = k1 with DI, else ``num_queries``);
    * ``interm``: predictions of the selected tokens (``pred_logits (B, k, K)``,
      ``pred_boxes (B, k, 4)`` normalized cxcywh, ``pred_masks (B, k, H/4, W/4)``);
    * ``initial_boxes_unsigmoid (B, k, 4)``: their boxes by ``initialize_box_type``;
    * ``tgt (B, Q, C)`` and ``refpoints_unsigmoid (B, Q, 4)``: the decoder's input queries
      (content and boxes);
    * ``layers``: ``dec_layers + 1`` dicts of ``pred_logits``, ``pred_boxes``,
      ``pred_masks``, layer 0 being the prediction from the decoder's input queries;
    * ``hidden``, ``references``: the decoder's (see :class:`DecoderOutput`);
    * ``di`` (DI on): DI's stage; ``di_extra``: the further selection stages
      (``extra_selected_queries``), in order;
    * ``bato`` (BATO on and >= 2 decoder layers): BATO's outputs;
    * ``denoising`` (training with ``targets``): the denoising queries and their per-layer
      predictions; every other output covers the matching queries only.
    """

    memory: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    selection: Selection
    interm: dict[str, torch.Tensor]
    initial_boxes_unsigmoid: torch.Tensor
    tgt: torch.Tensor
    refpoints_unsigmoid: torch.Tensor
    layers: list[dict[str, torch.Tensor | None]]
    hidden: list[torch.Tensor]
    references: list[torch.Tensor]
    di: DIOutput | None = None
    di_extra: list[DIOutput] = field(default_factory=list)
    bato: BATOOutput | None = None
    denoising: DenoisingOutput | None = None


class DIMaskDINOPredictor(nn.Module):
    """From encoder tokens to class, box and mask predictions of every decoder layer: the
    official ``MaskDINODecoder`` / ``DIMaskDINODecoder``, with DI and BATO switched by the
    config (both off: MaskDINO's)."""

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
        self.di = None if config.first_selected_queries is None else DeImbalance(
            dim, config.dim_feedforward, config.ti_layers, config.dropout, config.heads)
        self.extra_di = nn.ModuleList(
            DeImbalance(dim, config.dim_feedforward, config.ti_layers, config.dropout,
                        config.heads) for _ in config.extra_selected_queries)
        self.bato = None if config.num_guiding_tokens is None else BalanceAwareTokens(
            dim, config.dim_feedforward, config.num_guiding_tokens, config.dropout,
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

    def forward(self, encoded: dict, all_layer_masks: bool = True,
                targets: list[dict[str, torch.Tensor]] | None = None) -> PredictorOutput:
        """The paper's Fig. 2 from the encoder's outputs (:class:`MaskDINOEncoder`'s dict).

        ``all_layer_masks=False`` predicts masks only where the official evaluation does
        (the selected tokens, for mask2box, and the last layer); the other layers'
        ``pred_masks`` are then None. ``targets`` (per image ``labels`` and normalized cxcywh
        ``boxes``) add denoising queries in training mode.
        """
        config, heads, last = self.config, self.heads, self.config.dec_layers
        memory, shapes, starts = reverse_levels(encoded["memory"], encoded["spatial_shapes"])
        mask_features = encoded["mask_features"]
        # query selection (DI's first selection), its prediction and boxes
        selection = self.selection(memory, shapes, config.first_selected_queries
                                   or config.num_queries, heads)
        interm = self.predict_layer(selection.content, mask_features,
                                    selection.boxes_unsigmoid.sigmoid())
        initial_boxes = self.initial_boxes(selection, interm)
        # DI: token interaction and the further selections
        tgt, refpoints, stages = self.de_imbalance(selection.content.detach(), initial_boxes)
        if config.random_position_tokens:
            refpoints = self.random_refpoints_unsigmoid.to(tgt).expand(tgt.shape[0], -1, -1)
        dn = make_denoising_queries(targets, self.label_enc, config.num_queries, config.dn_num,
                                    config.dn_noise_scale) \
            if self.training and targets is not None and config.denoising else None
        queries, boxes, attn_mask = prepend_denoising(dn, tgt, refpoints)
        # layer-0 prediction, then decoder layer 0
        layers = [self.predict_layer(queries, mask_features if all_layer_masks or last == 0
                                     else None, boxes)]
        run = self.decoder(queries, boxes, memory, shapes, starts, heads, attn_mask, slice(1))
        # BATO: the encoder tokens guided by the best queries become T_bal
        bato = None
        if self.bato is not None and last > 1:
            candidates, candidate_pos = self.guiding_candidates(
                run, 0 if dn is None else dn.size, selection, initial_boxes, tgt, refpoints)
            memory_pos = torch.cat(encoded["positions"][::-1], dim=1)
            bato = self.bato(candidates, candidate_pos, memory, memory_pos, shapes, starts,
                             mask_features, heads)
        # decoder layers 1..L on T_bal
        run = run.then(self.decoder(run.output, run.references[-1].detach(),
                                    memory if bato is None else bato.memory, shapes, starts,
                                    heads, attn_mask, slice(1, None)))
        # the heads on every layer, then the denoising queries' predictions apart
        layers += self.decoder_predictions(run, mask_features, bato, all_layer_masks)
        out = PredictorOutput(memory, shapes, starts, selection, interm, initial_boxes, tgt,
                              refpoints, layers, run.hidden, run.references,
                              di=stages[0] if stages else None, di_extra=stages[1:], bato=bato)
        return out if dn is None else split_denoising(out, dn)

    def predict_layer(self, hidden: torch.Tensor, mask_features: torch.Tensor | None,
                      boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Heads on ``hidden (B, Q, C)`` (no masks without ``mask_features``); ``boxes`` are
        passed through as ``pred_boxes``."""
        logits, masks = self.heads(hidden, mask_features)
        return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}

    def initial_boxes(self, selection: Selection, interm: dict[str, torch.Tensor]
                      ) -> torch.Tensor:
        """The selected tokens' boxes ``(B, k, 4)`` (inverse-sigmoid) by
        ``initialize_box_type``: from their masks, or (``no``) their encoder boxes."""
        if self.config.initialize_box_type in BOX_RULES:
            return mask_logits_to_boxes(interm["pred_masks"], self.config.initialize_box_type)
        return selection.boxes_unsigmoid.detach()

    def de_imbalance(self, tokens: torch.Tensor, boxes_unsigmoid: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, list[DIOutput]]:
        """DI (paper §3.2): token interaction + selection, once per selection stage after
        the first. ``tokens (B, k1, C)`` and their boxes ``(B, k1, 4)`` (inverse-sigmoid) ->
        the decoder's queries ``(B, Q, C)``, their boxes ``(B, Q, 4)`` (inverse-sigmoid) and
        every stage's outputs; without DI, the tokens and boxes as they are."""
        if self.di is None:
            return tokens, boxes_unsigmoid, []
        stages = []
        keeps = (*self.config.extra_selected_queries, self.config.num_queries)
        for stage, keep in zip([self.di, *self.extra_di], keeps, strict=True):
            stages.append(stage(tokens, boxes_unsigmoid, keep, self.heads))
            tokens, boxes_unsigmoid = stages[-1].content, inverse_sigmoid(
                stages[-1].selected_boxes)
        return tokens, boxes_unsigmoid, stages

    def guiding_candidates(self, run: DecoderOutput, pad: int, selection: Selection,
                           initial_boxes: torch.Tensor, tgt: torch.Tensor,
                           refpoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BATO's guiding-token candidates ``(B, n, C)`` and their position embeddings: the
        matching queries after decoder layer 0 (Q_bal; the ``pad`` denoising queries
        first in ``run`` are left out) or, for Tab. 5's ablation, the first- (T_s1) or
        second-selected (T_s2) tokens."""
        if self.config.bato_guidance == "qbal":
            query_pos = self.decoder.query_position(run.references[-1].detach())
            return run.output[:, pad:], query_pos[:, pad:]
        tokens, boxes = (selection.content, initial_boxes) \
            if self.config.bato_guidance == "ts1" else (tgt, refpoints)
        return tokens, self.decoder.query_position(boxes.sigmoid())

    def decoder_predictions(self, run: DecoderOutput, mask_features: torch.Tensor,
                            bato: BATOOutput | None, all_layer_masks: bool
                            ) -> list[dict[str, torch.Tensor | None]]:
        """The heads on every decoder layer's output.

        As in the official code, the heads see ``decoder_norm`` twice (the decoder's output
        is already normalized) and the reported box refines the layer's input box with the
        normalized output; BATO's refreshed mask features serve the layers after the guided
        one (layer 0).
        """
        predictions = []
        for index, (hidden, reference) in enumerate(zip(run.hidden, run.references[:-1])):
            features = bato.mask_features if bato is not None and index > 0 else mask_features
            if not all_layer_masks and index + 1 < len(run.hidden):
                features = None
            boxes = (self.heads.bbox_embed(hidden) + inverse_sigmoid(reference)).sigmoid()
            predictions.append(self.predict_layer(hidden, features, boxes))
        return predictions


def prepend_denoising(dn: DenoisingQueries | None, tgt: torch.Tensor,
                      refpoints_unsigmoid: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The decoder's queries ``(B, P + Q, C)``, their boxes ``(B, P + Q, 4)`` (sigmoid space)
    and self-attention mask: the ``P`` denoising queries (if any) before the matching ones."""
    if dn is None:
        return tgt, refpoints_unsigmoid.sigmoid(), None
    return (torch.cat((dn.content, tgt), dim=1),
            torch.cat((dn.boxes_unsigmoid, refpoints_unsigmoid), dim=1).sigmoid(), dn.attn_mask)


def split_denoising(out: PredictorOutput, dn: DenoisingQueries) -> PredictorOutput:
    """``out`` with the denoising queries' predictions moved to ``out.denoising``."""
    def part(layer: dict, queries: slice) -> dict:
        return {k: None if v is None else v[:, queries] for k, v in layer.items()}

    pad = slice(dn.size)
    matching = slice(dn.size, None)
    return dataclasses.replace(
        out, layers=[part(layer, matching) for layer in out.layers],
        hidden=[h[:, matching] for h in out.hidden],
        references=[r[:, matching] for r in out.references],
        denoising=DenoisingOutput(dn, [part(layer, pad) for layer in out.layers]))
