"""The assembled model through ``load_official``: golden fixtures end to end, full-size keys."""

from __future__ import annotations

import pytest
import torch

from dimaskdino.checkpoint import CheckpointError, load_official
from dimaskdino.config import ConfigError
from dimaskdino.engine.inference import predict
from tests.modeling.official_instances import assert_instances_match

FIXTURES = ("dimaskdino_tiny", "maskdino_tiny", "maskdino_r50_3s_tiny", "maskdino_swin_tiny")
ATOL = 1e-6


@pytest.fixture(scope="module", params=FIXTURES)
def official_run(request, golden_fixtures):
    folder = golden_fixtures / request.param
    model = load_official(folder / "config.yaml", folder / "state_dict.pt")
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    want = torch.load(folder / "outputs.pt", weights_only=True)
    sizes = list(zip(inputs["heights"], inputs["widths"], strict=True))
    got = model.predict(inputs["images"], output_sizes=sizes, all_layers=True)
    return request.param, model, got, want


def test_loads_in_float64_and_eval_mode(official_run):
    _, model, _, _ = official_run
    assert not model.training
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model.pixel_mean.dtype == torch.float64


def test_every_layer_matches(official_run):
    _, _, got, want = official_run
    for stage, tensor in want["backbone"].items():
        torch.testing.assert_close(got.outputs["backbone"][stage], tensor, rtol=0, atol=ATOL)
    torch.testing.assert_close(got.outputs["encoder"]["memory"], want["encoder_memory"],
                               rtol=0, atol=ATOL)
    assert len(got.layers) == len(want["layers"])
    for index, (g, w) in enumerate(zip(got.layers, want["layers"], strict=True)):
        for key in ("pred_logits", "pred_boxes", "pred_masks"):
            torch.testing.assert_close(g[key], w[key], rtol=0, atol=ATOL,
                                       msg=f"layer {index} {key}")


def test_selections_are_identical(official_run):
    name, _, got, want = official_run
    if name.startswith("maskdino"):
        assert torch.equal(got.outputs["selection"]["indices"], want["topk_indices"])
    else:
        assert torch.equal(got.outputs["selection"]["indices"],
                           want["first_select_topk_indices"])
        assert torch.equal(got.outputs["di"]["indices"], want["second_select_topk_indices"])
        assert torch.equal(got.outputs["bato"]["indices"], want["guiding_topk_indices"])


def test_instances_match(official_run):
    _, model, got, want = official_run
    assert_instances_match(got.instances, want["instances"], model.config.predictor.num_classes,
                           ATOL)


def test_final_layer_only_prediction_gives_the_same_instances(official_run, golden_fixtures):
    name, model, got, _ = official_run
    inputs = torch.load(golden_fixtures / name / "inputs.pt", weights_only=True)
    sizes = list(zip(inputs["heights"], inputs["widths"], strict=True))
    fast = model.predict(inputs["images"], output_sizes=sizes)
    assert fast.layers == []
    assert fast.outputs["layers"][1]["pred_masks"] is None
    for a, b in zip(fast.instances, got.instances, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def window_offsets_index(tokens: int) -> torch.Tensor:
    """Swin's relative_position_index for a window of ``tokens`` = W * W tokens, written
    from the fixture README's formula, pair by pair."""
    window = int(tokens**0.5)
    index = torch.empty(tokens, tokens, dtype=torch.long)
    for p in range(tokens):
        for q in range(tokens):
            (yp, xp), (yq, xq) = divmod(p, window), divmod(q, window)
            index[p, q] = (yp - yq + window - 1) * (2 * window - 1) + (xp - xq + window - 1)
    return index


def random_official_state(keys_file):
    """Random tensors of the listed shapes; equal shapes get equal values, so the official
    aliases of shared modules hold identical tensors as in a real checkpoint. Swin's
    integer relative_position_index buffers get their defined values."""
    state, indices = {}, {}
    for line in keys_file.read_text().splitlines():
        key, shape, *_ = line.split("\t")
        dims = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
        if key.endswith("relative_position_index"):
            state[key] = indices.setdefault(dims, window_offsets_index(dims[0]))
            continue
        generator = torch.Generator().manual_seed(hash(dims) % 2**31)
        state[key] = torch.randn(dims, generator=generator)
    return state


@pytest.mark.slow
@pytest.mark.parametrize(("name", "parameters"), [("dimaskdino_r50", 52_286_232),
                                                  ("maskdino_r50", 52_058_004),
                                                  ("maskdino_r50_3s", 43_816_436),
                                                  ("maskdino_swinl", 222_799_144)])
def test_full_size_configs_accept_exactly_the_official_keys(name, parameters, golden_fixtures):
    state = random_official_state(golden_fixtures / f"keys_{name}_full.txt")
    model = load_official(golden_fixtures / f"config_{name}_full.yaml", state)
    assert sum(p.numel() for p in model.parameters()) == parameters
    loaded = model.state_dict()
    key = "predictor.heads.class_embed.weight"
    assert torch.equal(loaded[key], state["sem_seg_head.predictor.class_embed.weight"])
    missing_one = dict(state)
    missing_one.pop("sem_seg_head.predictor.decoder.layers.0.norm1.weight")
    with pytest.raises(CheckpointError, match="1 missing keys"):
        load_official(golden_fixtures / f"config_{name}_full.yaml", missing_one)


def test_bad_inputs_are_one_clear_error(tmp_path, golden_fixtures):
    with pytest.raises(ConfigError, match="config not found"):
        load_official(tmp_path / "missing.yaml")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_official(golden_fixtures / "maskdino_tiny" / "config.yaml", tmp_path / "x.pth")
    other = torch.load(golden_fixtures / "dimaskdino_tiny" / "state_dict.pt",
                       weights_only=True)
    with pytest.raises(CheckpointError, match="does not fit the MaskDINO"):
        load_official(golden_fixtures / "maskdino_tiny" / "config.yaml", other)


def test_float64_fixture_models_predict_exactly_under_auto(official_run, golden_fixtures):
    name, model, got, _ = official_run
    inputs = torch.load(golden_fixtures / name / "inputs.pt", weights_only=True)
    sizes = list(zip(inputs["heights"], inputs["widths"], strict=True))
    auto = predict(model, inputs["images"], output_sizes=sizes, all_layers=True,
                   precision="auto")
    for mine, theirs in zip(auto.layers, got.layers, strict=True):
        assert all(torch.equal(mine[key], theirs[key]) for key in mine)
