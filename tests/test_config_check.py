"""Up-front refusal of configs that cannot run: the token count against the real encoder,
the issue's example through the CLI."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from dimaskdino.cli import app
from dimaskdino.config import ConfigError, apply_overrides, preset
from dimaskdino.config_check import check_runnable, encoder_tokens, smallest_square
from dimaskdino.modeling.model import DIMaskDINO


@pytest.mark.parametrize("size", [(64, 64), (100, 70), (33, 161), (1, 1)])
def test_token_count_is_the_encoders(size):
    model = DIMaskDINO(preset("tiny").model).eval()
    height, width = (-(-side // 32) * 32 for side in size)  # the model pads to 32
    with torch.no_grad():
        encoded = model.encoder(model.backbone(torch.zeros(1, 3, height, width)))
    assert encoded["memory"].shape[1] == encoder_tokens(model.config, *size)


def test_paper_model_tokens_and_smallest_square():
    model = preset("r50-coco-12ep").model
    assert encoder_tokens(model, 128, 128) == 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2  # 340
    side = smallest_square(model, 600)
    assert encoder_tokens(model, side, side) >= 600 > encoder_tokens(model, side - 32,
                                                                     side - 32)


def test_guiding_tokens_cannot_outnumber_the_queries():
    config = apply_overrides(preset("tiny"), ["model.predictor.num_guiding_tokens=31"])
    with pytest.raises(ConfigError, match="num_guiding_tokens<=30"):
        check_runnable(config)
    check_runnable(preset("tiny"))


def test_the_issues_example_is_one_line_before_any_work(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--preset", "r50-coco-12ep", "--data", "synthetic", "--out", str(out),
        "model.predictor.num_classes=6", "data.image_size=[128,128]"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert "first_selected_queries=600" in line and "340 encoder tokens" in line
    assert "data.image_size=[192, 192]" in line and "first_selected_queries<=340" in line
    assert not out.exists()


def test_a_frozen_backbone_trained_from_scratch_is_one_clear_error():
    from dimaskdino.config import ConfigError, apply_overrides, check_starting_weights, preset

    config = apply_overrides(preset("tiny"), ["model.backbone_weights=none",
                                              "model.backbone.freeze_at=5"])
    with pytest.raises(ConfigError, match=r"freeze_at=5 freezes random stages; add "
                                          r"model\.backbone\.freeze_at=0"):
        check_starting_weights(config)
    check_starting_weights(apply_overrides(config, ["model.backbone.freeze_at=0"]))
