"""Classification pretraining: the tiny scale's ImageNet.

The paper's backbones start from ImageNet classification weights and detection training
learns boxes, masks and the class mapping on top. No ImageNet file can be downloaded on a
CPU-only machine without a network, so dimask makes the tiny scale's own: a ResNet (any
:class:`ResNetConfig`) with a linear classifier on its global-average-pooled ``res5`` is
trained on the synthetic shapes set (:mod:`dimaskdino.data.classification`), with AdamW, a
linear warm-up and a cosine decay, every batch flipped and turned by a multiple of 90
degrees (the labels do not change). The result is written as a torchvision ResNet state
dict (``conv1``, ``bn1``, ``layer1``.., ``fc``; the GroupNorm layers under torchvision's
``bn`` names), the layout ``model.backbone_weights`` reads for ImageNet files, so detection
training goes through the same loader as the paper's R-50.

``model.backbone_weights=pretrained:tiny`` names the built-in recipe :data:`RECIPES` ``["tiny"]``:
its file is built once per machine and cached under ``$DIMASK_CACHE/backbones``, keyed by
the recipe (:func:`builtin_backbone`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dimaskdino.checkpoint import LAYOUT_INPUT, TORCHVISION, detectron2_to_torchvision
from dimaskdino.config import ConfigError, config_to_dict
from dimaskdino.config_ranges import above, at_least, between, check_ranges, ranged
from dimaskdino.data.classification import ShapesClassificationSpec, render_split
from dimaskdino.data.specs import default_cache_dir
from dimaskdino.data.synthetic import CLASSES, SEED_MAX
from dimaskdino.fileio import atomic_save
from dimaskdino.modeling.backbone.resnet import ResNet, ResNetConfig
from dimaskdino.progress import progress_bar

BUILTIN_PREFIX = "pretrained:"
# bump when the training code changes what a recipe produces: cached files are rebuilt
RECIPE_VERSION = 1


@dataclass
class PretrainConfig:
    """A backbone, the classification set it learns, and the schedule (AdamW, linear
    warm-up over ``warmup_iters``, cosine decay to zero at ``iterations``)."""

    backbone: ResNetConfig = field(default_factory=ResNetConfig)
    data: ShapesClassificationSpec = field(default_factory=ShapesClassificationSpec)
    batch_size: int = ranged(128, at_least(1))
    iterations: int = ranged(1200, at_least(1))
    lr: float = ranged(2.5e-3, above(0))
    weight_decay: float = ranged(0.05, at_least(0))
    warmup_iters: int = ranged(100, at_least(0))
    seed: int = ranged(0, between(0, SEED_MAX))

    def __post_init__(self) -> None:
        check_ranges(self)


def _tiny() -> PretrainConfig:
    from dimaskdino.config import preset

    return PretrainConfig(backbone=preset("tiny").model.backbone)


RECIPES: dict[str, Callable[[], PretrainConfig]] = {"tiny": _tiny}


def recipe(name: str) -> PretrainConfig:
    """The built-in pretraining recipe ``name`` (:data:`RECIPES`)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown pretraining preset {name!r}; choose one of "
                          f"{', '.join(RECIPES)}")
    return RECIPES[name]()


class Classifier(nn.Module):
    """A ResNet and a linear classifier on its global-average-pooled last stage."""

    def __init__(self, backbone: ResNetConfig, num_classes: int) -> None:
        super().__init__()
        self.backbone = ResNet(backbone)
        self.last = self.backbone.stage_names[-1]
        self.fc = nn.Linear(self.backbone.out_channels[self.last], num_classes)
        mean, std, _ = LAYOUT_INPUT[TORCHVISION]
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (N, 3, H, W) uint8 RGB -> class logits (N, num_classes)."""
        x = (images.float() - self.pixel_mean) / self.pixel_std
        return self.fc(self.backbone(x)[self.last].mean((2, 3)))

    def torchvision_state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone and classifier in torchvision's ResNet names."""
        state = detectron2_to_torchvision(self.backbone.state_dict())
        return {**state, "fc.weight": self.fc.weight.detach(), "fc.bias": self.fc.bias.detach()}


@dataclass(frozen=True)
class PretrainResult:
    path: Path
    top1: float       # held-out top-1 accuracy, in [0, 1]
    seconds: float    # wall time, rendering included


def _learning_rate(config: PretrainConfig, iteration: int) -> float:
    warmup = min(1.0, (iteration + 1) / max(1, config.warmup_iters))
    return config.lr * warmup * 0.5 * (1 + math.cos(math.pi * iteration / config.iterations))


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch turned by a random multiple of 90 degrees and flipped with p = 0.5."""
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    images = torch.rot90(images, turns, (2, 3))
    if torch.rand(1, generator=generator).item() < 0.5:
        images = images.flip(3)
    # a turned view's strides would send the convolutions down a slow path
    return images.contiguous()


@torch.no_grad()
def top1_accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor,
                  batch_size: int = 500) -> float:
    """The fraction of ``images`` whose highest logit is their label (eval mode)."""
    model.eval()
    right = sum(int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size])
                    .sum()) for i in range(0, len(labels), batch_size))
    return right / len(labels)


def pretrain(config: PretrainConfig, out: str | Path, progress: bool = True) -> PretrainResult:
    """Train ``config``'s classifier and write its torchvision state dict to ``out``
    (atomically: an interruption leaves no file)."""
    started = time.perf_counter()
    spec = config.data
    # the caller's random state is left as it was: a run that builds the file first trains
    # as one that finds it cached
    with torch.random.fork_rng(devices=[]), \
            progress_bar(disable=not progress, stderr=True) as bar:
        task = bar.add_task("render shapes", total=spec.num_train + spec.num_val, status="")
        images, labels = render_split(spec, "train", lambda n: bar.advance(task, n))
        held_images, held_labels = render_split(spec, "val", lambda n: bar.advance(task, n))
        torch.manual_seed(config.seed)
        model = Classifier(config.backbone, len(CLASSES))
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        task = bar.add_task("pretrain backbone", total=config.iterations, status="")
        model.train()
        for iteration in range(config.iterations):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, iteration)
            index = torch.randint(0, len(labels), (config.batch_size,), generator=generator)
            loss = F.cross_entropy(model(_augment(images[index], generator)), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(task, advance=1, status=f"loss {loss.item():.3f}")
        top1 = top1_accuracy(model, held_images, held_labels)
    atomic_save(model.torchvision_state_dict(), out)
    return PretrainResult(Path(out), top1, time.perf_counter() - started)


def recipe_digest(config: PretrainConfig) -> str:
    """A short hash of everything that decides a recipe's weights."""
    text = json.dumps({"version": RECIPE_VERSION, **config_to_dict(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def builtin_path(name: str, cache_dir: Path | None = None) -> Path:
    """Where the built-in recipe ``name``'s file is cached."""
    cache = cache_dir or default_cache_dir()
    return cache / "backbones" / f"{name}-{recipe_digest(recipe(name))}.pth"


def builtin_backbone(name: str, announce: Callable[[str], None] | None = print,
                     progress: bool = True) -> Path:
    """The cached file of the built-in recipe ``name``, pretrained first where missing
    (under a lock, so that concurrent runs build it once)."""
    path = builtin_path(name)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():  # another process built it while we waited
            return path
        if announce is not None:
            announce(f"dimask: pretraining the {name} backbone on synthetic shapes (once; "
                     f"cached in {path})")
        result = pretrain(recipe(name), path, progress=progress)
        if announce is not None:
            announce(f"dimask: {name} backbone pretrained in {result.seconds:.0f} s, "
                     f"held-out top-1 {100 * result.top1:.1f}%")
    return path


def resolve_backbone_weights(value: str, announce: Callable[[str], None] | None = print,
                             progress: bool = True) -> str:
    """``model.backbone_weights`` as a file path: ``pretrained:NAME`` becomes the built-in
    recipe's cached file (built where missing); any other value is returned as it is."""
    if not value.startswith(BUILTIN_PREFIX):
        return value
    return str(builtin_backbone(value.removeprefix(BUILTIN_PREFIX), announce, progress))
