"""Denoising queries: placement, noise, attention mask, and their isolation in the decoder."""

from __future__ import annotations

import torch
from torch import nn

from dimaskdino.modeling.denoising import attention_mask, make_denoising_queries
from dimaskdino.modeling.predictor import DIMaskDINOPredictor, PredictorConfig
from tests.modeling.encoded import encoded


def test_attention_mask_blocks():
    mask = attention_mask(groups=3, group_size=2, num_queries=4)
    assert mask.shape == (10, 10)
    assert mask[6:, :6].all() and not mask[6:, 6:].any()    # matching: no denoising
    assert not mask[:6, 6:].any()                             # denoising sees matching
    for g in range(3):
        block = slice(2 * g, 2 * g + 2)
        assert not mask[block, block].any()                   # a group sees itself
        others = [i for i in range(6) if i // 2 != g]
        assert mask[block][:, others].all()                   # and no other group


def targets(counts, generator):
    return [{"labels": torch.randint(0, 5, (n,), generator=generator),
             "boxes": torch.rand(n, 4, generator=generator) * 0.5 + 0.25} for n in counts]


def test_queries_are_placed_and_noised_within_bounds():
    g = torch.Generator().manual_seed(0)
    label_enc = nn.Embedding(5, 8)
    t = targets([3, 1], g)
    dn = make_denoising_queries(t, label_enc, num_queries=7, budget=10, noise_scale=0.4,
                                generator=g)
    assert (dn.groups, dn.group_size, dn.size) == (3, 3, 9)
    assert dn.content.shape == (2, 9, 8) and dn.attn_mask.shape == (16, 16)
    # image 1 has one object: slots 1, 2 of every group are padding
    assert not dn.content[1, [1, 2, 4, 5, 7, 8]].any()
    assert torch.equal(dn.query_index, torch.tensor([0, 1, 2, 0, 3, 4, 5, 3, 6, 7, 8, 6]))
    noisy = dn.boxes_unsigmoid[dn.batch_index, dn.query_index].sigmoid()
    bound = torch.cat((dn.boxes[:, 2:] / 2, dn.boxes[:, 2:]), 1) * 0.4 + 1e-6
    assert ((noisy - dn.boxes).abs() <= bound).all()
    assert make_denoising_queries(targets([0, 0], g), label_enc, 7) is None


def test_label_noise_rate_is_half_the_noise_scale():
    g = torch.Generator().manual_seed(1)
    label_enc = nn.Embedding(1000, 4)
    t = [{"labels": torch.zeros(100, dtype=torch.long), "boxes": torch.full((100, 4), 0.5)}]
    flipped = 0
    for _ in range(50):
        dn = make_denoising_queries(t, label_enc, 5, budget=100, noise_scale=0.4, generator=g)
        embedded = dn.content[0, dn.query_index]
        flipped += (embedded != label_enc.weight[0]).any(-1).sum().item()
    assert abs(flipped / 5000 - 0.2) < 0.02


def test_denoising_queries_do_not_change_matching_predictions():
    torch.manual_seed(0)
    config = PredictorConfig(num_classes=5, hidden_dim=32, num_queries=6, dim_feedforward=64,
                             dec_layers=3, mask_dim=32, first_selected_queries=10,
                             ti_layers=1, num_guiding_tokens=3)
    predictor = DIMaskDINOPredictor(config).double().train()
    maps = [torch.randn(2, 32, s, s, dtype=torch.float64) for s in (8, 4, 2, 1)]
    mask_features = torch.randn(2, 32, 16, 16, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    plain = predictor(encoded(maps, mask_features))
    with_dn = predictor(encoded(maps, mask_features), targets=targets([2, 4], g))
    assert "denoising" in with_dn and "denoising" not in plain
    dn_layers = with_dn["denoising"]["layers"]
    assert len(dn_layers) == 4 and dn_layers[-1]["pred_logits"].shape == (2, 100, 5)
    for a, b in zip(with_dn["layers"], plain["layers"], strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-10)
    torch.testing.assert_close(with_dn["bato"]["memory"], plain["bato"]["memory"],
                               rtol=0, atol=1e-10)
