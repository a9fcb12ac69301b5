"""Every config field's range: stated, enforced on every way a config is built (one line
naming key, value and range, never another exception), and shown in the README."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dimaskdino.checkpoint import TRAINING_FORMAT
from dimaskdino.cli import app
from dimaskdino.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    preset,
    ranges_table,
)
from dimaskdino.config_check import check_runnable
from dimaskdino.config_ranges import valid_range
from tests.conftest import MICRO, REPO

runner = CliRunner()


def _leaves(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict) and value and not key.startswith("in_"):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


# the Swin-L preset holds the Swin backbone's fields, tiny the ResNet's and all the others
BASES = {"tiny": preset("tiny"), "swinl-coco-12ep": preset("swinl-coco-12ep")}
KEYS = sorted({(name, key) for name, config in BASES.items()
               for key in _leaves(config_to_dict(config))})


def _config_classes(cls: type):
    yield cls
    for hint in typing.get_type_hints(cls).values():
        for member in typing.get_args(hint) or (hint,):
            if dataclasses.is_dataclass(member):
                yield from _config_classes(member)


def test_every_field_states_its_range():
    for cls in _config_classes(ExperimentConfig):
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            hint = hints[spec.name]
            if hint is bool or any(map(dataclasses.is_dataclass, typing.get_args(hint) or
                                       (hint,))):
                continue
            assert valid_range(spec) is not None, f"{cls.__name__}.{spec.name} has no range"


def test_readme_holds_the_generated_table():
    readme = (REPO / "README.md").read_text()
    assert ranges_table() in readme, ("the README's ranges table is out of date: paste the "
                                      "output of python -c 'from dimaskdino.config import "
                                      "ranges_table; print(ranges_table())'")
    assert ranges_table().count("\n") >= len({key for _, key in KEYS})


# zero, negative, huge, NaN, inf, wrong type, empty, and YAML spellings of them
HOSTILE = [0, -1, -(10**9), 10**9, 2**70, 0.0, -0.5, 1e300, float("nan"), float("inf"),
           float("-inf"), "nan", "inf", "", "x", [], [0], [-1, 2], {}, {"a": 1}, None, True]


def _override(key: str, value) -> str:
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}".removesuffix(
        "\n...")


def _numbers(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return [value] if isinstance(value, float) else []


def _validate(base: ExperimentConfig, overrides: list[str]) -> ExperimentConfig | None:
    """The config, or None after checking the refusal is one ConfigError line."""
    try:
        config = apply_overrides(base, overrides)
        check_runnable(config)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
        return None
    return config


@pytest.mark.slow
@pytest.mark.parametrize(("base", "key"), KEYS)
@given(value=st.sampled_from(HOSTILE) | st.integers() | st.floats() | st.text(max_size=8)
       | st.lists(st.integers(-3, 10**6), max_size=4))
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_value_of_any_field_is_accepted_or_refused_in_one_line(base, key, value):
    config = _validate(BASES[base], [_override(key, value)])
    if config is None:
        return
    # what is accepted is finite, and survives the round trip
    assert all(map(math.isfinite, _numbers(config_to_dict(config))))
    assert config_from_dict(ExperimentConfig, config_to_dict(config)) == config


@pytest.mark.parametrize(("override", "key", "shown", "valid"), [
    ("solver.max_iter=0", "solver.max_iter", "0", ">= 1"),
    ("solver.lr=-0.1", "solver.lr", "-0.1", ">= 0"),
    ("data.image_size=[0, 64]", "data.image_size", "[0, 64]", "each >= 1"),
    ("solver.steps=[9000]", "solver.steps", "[9000]", "in [1, max_iter], increasing "
                                                      "(max_iter=900)"),
    ("solver.steps=[300, 200]", "solver.steps", "[300, 200]", "increasing"),
    ("loss.importance=1.5", "loss.importance", "1.5", "in [0, 1]"),
    ("data.max_scale=0.5", "data.max_scale", "0.5", ">= min_scale"),
    ("solver.gamma=.nan", "solver.gamma", "nan", "> 0"),
    ("loss.mask=.inf", "loss.mask", "inf", ">= 0"),
    ("model.backbone.depth=26", "model.backbone.depth", "26", "one of 18, 34, 50, 101, 152"),
    ("model.predictor.dec_layers=0", "model.predictor.dec_layers", "0", ">= 1"),
    ("model.encoder.conv_dim=48", "model.encoder.conv_dim", "48", "a multiple of 32"),
    ("model.predictor.heads=3", "model.predictor.heads", "3", "a divisor of hidden_dim (64)"),
    ("model.predictor.hidden_dim=128", "model.predictor.hidden_dim", "128",
     "equal to model.encoder.conv_dim (64)"),
    ("model.backbone.res2_out_channels=48", "model.backbone.res2_out_channels", "48",
     "a multiple of 32 with norm GN"),
    ("data.dataset=cocoa:x", "data.dataset", "'cocoa:x'", "a dataset spec"),
    ("data.synthetic.num_train=0", "data.synthetic.num_train", "0", ">= 1"),
    ("solver.seed=-1", "solver.seed", "-1", "in [0, 4294967295]"),
])
def test_the_error_names_key_value_and_range(override, key, shown, valid):
    with pytest.raises(ConfigError) as caught:
        apply_overrides(preset("tiny"), [override])
    message = str(caught.value)
    assert message.startswith(f"{key}={shown}: must be ") and valid in message, message


HEAD = "MODEL:\n  SEM_SEG_HEAD:\n    CONVS_DIM: 256\n"  # as the decoder's HIDDEN_DIM


def test_presets_and_official_configs_are_checked(tmp_path):
    for name in ("tiny", "r50-coco-12ep", "r50-bdd100k-68ep", "swinl-coco-50ep"):
        preset(name, "maskdino")
    from dimaskdino.config import load_official_config

    (tmp_path / "bad.yaml").write_text(f"{HEAD}  MaskDINO:\n    NUM_OBJECT_QUERIES: 0\n")
    with pytest.raises(ConfigError, match=r"^model\.predictor\.num_queries=0: must be >= 1"):
        ModelConfig.from_official(load_official_config(tmp_path / "bad.yaml"))
    (tmp_path / "heads.yaml").write_text(f"{HEAD}  MaskDINO:\n    NHEADS: 0\n")
    with pytest.raises(ConfigError, match=r"^model\.encoder\.heads=0"):
        ModelConfig.from_official(load_official_config(tmp_path / "heads.yaml"))


def _one_line(result) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    (line,) = result.output.strip().splitlines()
    return line


@pytest.mark.parametrize(("args", "expected"), [
    (["solver.max_iter=0"], "error: solver.max_iter=0: must be >= 1"),
    (["solver.max_iter=-5"], "error: solver.max_iter=-5: must be >= 1"),
    (["data.image_size=[0,64]"], "error: data.image_size=[0, 64]: must be a list, each >= 1"),
    (["solver.lr=-1e-3"], "error: solver.lr=-0.001: must be >= 0"),
    (["--data", "images"], "error: data.dataset='images': must be a dataset spec"),
])
def test_train_refuses_out_of_range_before_any_work(tmp_path, args, expected):
    out = tmp_path / "run"
    line = _one_line(runner.invoke(app, ["train", "--out", str(out), *args]))
    assert line.startswith(expected), line
    assert not out.exists()


def test_official_yaml_and_stored_configs_are_checked_through_the_cli(tmp_path):
    (tmp_path / "bad.yaml").write_text(f"{HEAD}    NUM_CLASSES: -3\n")
    out = tmp_path / "eval"
    line = _one_line(runner.invoke(app, ["eval", str(tmp_path / "none.pth"),
                                         "--official-config", str(tmp_path / "bad.yaml"),
                                         "--out", str(out)]))
    assert "model.predictor.num_classes=-3: must be >= 1" in line
    stored = config_to_dict(preset("tiny"))
    stored["solver"]["max_iter"] = 0
    checkpoint = tmp_path / "model.pth"
    torch.save({"format": TRAINING_FORMAT, "config": stored, "model": {}}, checkpoint)
    line = _one_line(runner.invoke(app, ["eval", str(checkpoint), "--out", str(out)]))
    assert f"{checkpoint} holds a config this dimask cannot read: solver.max_iter=0: must " \
           "be >= 1" in line
    assert not out.exists()


def test_a_split_without_images_is_refused_before_any_work(tmp_path):
    (tmp_path / "images").mkdir()
    empty = tmp_path / "empty.json"
    empty.write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}')
    out = tmp_path / "run"
    line = _one_line(runner.invoke(app, ["train", "--data", f"coco-json:{empty}:{tmp_path}/images",
                                         "--out", str(out), "model.predictor.num_classes=1",
                                         "model.backbone_weights=none"]))
    assert line == (f"error: {empty} lists no images (dataset coco-json:{empty}:{tmp_path}/images"
                    ", train split): there is nothing to run on")
    assert not out.exists()


# fields whose every accepted value is cheap to train with (sizes and counts that scale the
# work are left out: 10^9 of them is valid and slow)
RUN_FIELDS = ["solver.seed", "solver.log_period", "solver.checkpoint_period",
              "solver.eval_period", "solver.warmup_iters", "solver.warmup_factor",
              "solver.gamma", "solver.clip_norm", "solver.weight_decay", "loss.giou",
              "loss.detection_scale", "loss.importance", "data.flip",
              "model.detections_per_image", "model.predictor.dropout",
              "model.predictor.dn_noise_scale", "data.test_batch_size"]


@pytest.mark.slow
@given(key=st.sampled_from(RUN_FIELDS), value=st.sampled_from([*HOSTILE, 1, 2, 0.5]))
@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
def test_accepted_values_train_one_iteration(tmp_path_factory, monkeypatch, key, value):
    from dimaskdino.engine.trainer import Trainer

    directory = tmp_path_factory.mktemp("run")
    monkeypatch.setenv("DIMASK_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    config = _validate(preset("tiny"), [*MICRO, "solver.max_iter=1", _override(key, value)])
    assume(config is not None)
    result = Trainer(config, directory, progress=False).run()
    assert result.iteration == 1 and (directory / "model_final.pth").is_file()
    assert set(result.metrics) == {"bbox", "segm"}
