"""The C++ mask encoder against the PyTorch path (F.interpolate, threshold, mean
probability) and pycocotools' RLE: resized logits, RLE strings, scores and tight boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from dimaskdino.ops import masks as mask_ops
from dimaskdino.ops.build import ExtensionBuildError
from dimaskdino.ops.dispatch import KernelUnavailableWarning
from dimaskdino.ops.masks import binary_masks_and_scores, encode_mask_logits, resize_masks

# (stride-4 size, padded batch size, image size, output size): one stage (the output is the
# image), a crop, upsampling and downsampling to the output, odd sizes, a paper-sized map
SIZES = [((32, 40), (128, 160), (128, 160), (128, 160)),
         ((32, 40), (128, 160), (120, 150), (120, 150)),
         ((32, 40), (128, 160), (120, 150), (240, 300)),
         ((17, 23), (68, 92), (61, 90), (33, 201)),
         ((8, 10), (32, 40), (30, 37), (45, 50)),
         ((6, 7), (24, 28), (24, 28), (5, 3)),
         ((200, 304), (800, 1216), (800, 1199), (427, 640))]
NEAR_ZERO = 1e-5  # resized logits this close to 0 may round to either side


@pytest.fixture
def mask_kernel():
    from dimaskdino.ops.build import load_mask_extension

    return load_mask_extension()


def logits_of(low, count=6, seed=0, shift=0.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, *low, generator=generator) - shift


def decoded(rles) -> np.ndarray:
    return mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)


@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_resized_logits_equal_f_interpolate(sizes, mask_kernel):
    low, padded, image, output = sizes
    logits = logits_of(low)
    got = mask_kernel.resize_masks(logits, list(padded), list(image), list(output))
    torch.testing.assert_close(got, resize_masks(logits, padded, image, output),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("shift", [0.0, 2.0, 6.0], ids=["dense", "sparse", "few"])
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_encoding_equals_the_full_size_masks(sizes, shift, mask_kernel):
    """RLE = pycocotools' encoding of the full-size bool masks (pixels within rounding of
    0 aside), scores = the PyTorch mask scores, boxes = pycocotools' toBbox of the RLE."""
    low, padded, image, output = sizes
    logits = logits_of(low, shift=shift)
    reference = resize_masks(logits, padded, image, output)
    binary, scores = binary_masks_and_scores(logits, padded, image, output)
    found = encode_mask_logits(logits, padded, image, output, backend="cpu")
    settled = reference.abs().numpy() > NEAR_ZERO
    assert np.array_equal(decoded(found.rles)[settled], binary.numpy()[settled])
    want = [mask_utils.encode(np.asfortranarray(m)) for m in binary.numpy().astype(np.uint8)]
    if settled.all():
        assert [r["counts"] for r in found.rles] == [r["counts"].decode() for r in want]
    assert all(r["size"] == list(output) for r in found.rles)
    torch.testing.assert_close(found.scores, scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(found.boxes.numpy(), mask_utils.toBbox(found.rles))


def hand_made_logits(masks: np.ndarray) -> torch.Tensor:
    """Logits whose identity resize (stride-4 size = every other size) is ``masks``."""
    return torch.from_numpy(np.where(masks, 1.0, -1.0).astype(np.float32))


def test_rle_strings_of_hand_made_masks(mask_kernel):
    """Edge cases of COCO's RLE: empty, full, first / last pixel, runs longer than one
    5-bit group, and the deltas against the count two back turning negative."""
    height, width = 300, 400
    cases = np.zeros((7, height, width), dtype=bool)
    cases[1] = True
    cases[2, 0, 0] = True
    cases[3, -1, -1] = True
    cases[4, 150, 200] = True
    cases[5, :, 10:13] = True
    cases[5, 5:7, 100:300] = True
    cases[6, ::7, ::3] = True
    size = [height, width]
    scores, boxes, counts = mask_kernel.encode_masks(hand_made_logits(cases), size, size, size)
    want = [mask_utils.encode(np.asfortranarray(m)) for m in cases.astype(np.uint8)]
    assert counts == [r["counts"].decode() for r in want]
    np.testing.assert_array_equal(boxes.numpy(), mask_utils.toBbox(want))
    assert scores[0] == 0  # an empty mask scores 0
    torch.testing.assert_close(scores[1:], torch.full((6,), float(torch.tensor(1.0).sigmoid())))


def test_pixels_far_from_positive_logits_are_skipped_exactly(mask_kernel):
    """One positive stride-4 logit among very negative ones: only its neighbourhood is
    evaluated, and the mask still equals the full resize's."""
    low, padded, image, output = SIZES[2]
    logits = torch.full((3, *low), -50.0)
    logits[0, 5, 7] = 80.0
    logits[1, 0, 0] = 80.0
    logits[2, 29, 36] = 80.0  # beside the crop (the image ends at stride-4 row 30, col 37.5)
    binary, scores = binary_masks_and_scores(logits, padded, image, output)
    found = encode_mask_logits(logits, padded, image, output, backend="cpu")
    assert np.array_equal(decoded(found.rles), binary.numpy())
    assert binary.flatten(1).any(1).all()
    torch.testing.assert_close(found.scores, scores, rtol=1e-6, atol=1e-7)


def test_no_masks_and_other_dtypes(mask_kernel):
    empty = encode_mask_logits(torch.zeros(0, 8, 10), (32, 40), (30, 37), (45, 50))
    assert empty.rles == [] and empty.scores.shape == (0,) and empty.boxes.shape == (0, 4)
    logits = logits_of((8, 10), count=3, shift=0.5)
    single = encode_mask_logits(logits, (32, 40), (30, 37), (45, 50))
    double = encode_mask_logits(logits.double(), (32, 40), (30, 37), (45, 50))
    assert double.rles == single.rles and double.scores.dtype == torch.float64


def test_reference_backend_and_fallback_warning(monkeypatch, mask_kernel):
    """Where the kernel cannot be built the reference (bool masks + hotcoco's encoder)
    gives the same masks, with one warning; ``backend="cpu"`` then raises."""
    logits = logits_of((8, 10), count=5, shift=0.5)
    sizes = ((32, 40), (30, 37), (45, 50))
    kernel = encode_mask_logits(logits, *sizes, backend="cpu")
    reference = encode_mask_logits(logits, *sizes, backend="reference")
    assert reference.rles == kernel.rles
    torch.testing.assert_close(reference.boxes, kernel.boxes)
    torch.testing.assert_close(reference.scores, kernel.scores, rtol=1e-6, atol=1e-7)

    def broken():
        raise ExtensionBuildError("no compiler")

    monkeypatch.setattr(mask_ops, "load_mask_extension", broken)
    monkeypatch.setattr(mask_ops, "_warned", set())
    with pytest.warns(KernelUnavailableWarning, match="no compiler"):
        fallback = encode_mask_logits(logits, *sizes)
    assert fallback.rles == kernel.rles
    with pytest.raises(ExtensionBuildError):
        encode_mask_logits(logits, *sizes, backend="cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        encode_mask_logits(logits, *sizes, backend="cuda")


def test_bad_inputs_are_one_clear_error(mask_kernel):
    with pytest.raises(RuntimeError, match="image size <= padded size"):
        mask_kernel.encode_masks(torch.zeros(1, 8, 10), [32, 40], [33, 40], [33, 40])
    with pytest.raises(RuntimeError, match="float32"):
        mask_kernel.encode_masks(torch.zeros(1, 8, 10, dtype=torch.float64), [32, 40],
                                 [32, 40], [32, 40])


def test_rle_strings_of_random_small_masks(mask_kernel):
    """Byte for byte pycocotools' RLE over many small random masks and shapes (runs that
    cross column boundaries, masks that end on a positive pixel, one-pixel rows / columns)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(1, 9, size=2))
        masks = rng.random((3, height, width)) < rng.random()
        size = [height, width]
        _, boxes, counts = mask_kernel.encode_masks(hand_made_logits(masks), size, size, size)
        want = [mask_utils.encode(np.asfortranarray(m)) for m in masks.astype(np.uint8)]
        assert counts == [r["counts"].decode() for r in want], masks
        np.testing.assert_array_equal(boxes.numpy(), mask_utils.toBbox(want))
