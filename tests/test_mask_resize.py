"""Ground-truth masks are resized exactly as the references resize them: torchvision's
transforms on PIL images, nearest neighbours (NeCo linear and overclustering, Hummingbird,
TimeT)."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as PF
from PIL import Image
from torchvision.transforms import InterpolationMode

from mosic.stages.evaluation.hummingbird import crop_box, resized_crop
from mosic.stages.evaluation.overclustering import resize_mask


def pil_reference(mask: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """NeCo's ``RandomResizedCrop`` on the target: ``F.resized_crop(PIL, ..., NEAREST)``."""
    image = Image.fromarray(mask.astype(np.uint8), mode="L")
    return np.array(PF.resized_crop(image, *box, [size, size], InterpolationMode.NEAREST))


def test_crops_of_the_training_views_match_pil_pixel_for_pixel():
    rng = np.random.default_rng(0)
    differ_torch = 0
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(40, 500, 2))
        mask = rng.integers(0, 21, (h, w))
        box = crop_box(h, w, (0.5, 2.0), rng)  # Hummingbird's; NeCo's linear uses (0.8, 1)
        size = int(rng.choice([100, 448, 504, 512]))
        image = torch.zeros(3, h, w, dtype=torch.uint8)
        _, ours = resized_crop(image, torch.from_numpy(mask), box, size)
        np.testing.assert_array_equal(ours.numpy(), pil_reference(mask, box, size))
        tensor_nearest = PF.resized_crop(
            torch.from_numpy(mask)[None].float(), *box, [size, size], InterpolationMode.NEAREST
        )[0]
        differ_torch += int((tensor_nearest.long().numpy() != ours.numpy()).sum())
    assert differ_torch > 0  # torch's own nearest would not have matched the reference


def test_whole_image_resize_then_mask_size_as_overclustering_and_the_linear_probe():
    rng = np.random.default_rng(1)
    for h, w in ((375, 500), (333, 500), (480, 854)):
        mask = rng.integers(0, 21, (h, w))
        reference = pil_reference(mask, (0, 0, h, w), 448)  # T.Resize((448, 448), NEAREST)
        reference = torch.nn.functional.interpolate(  # then F.interpolate(..., 100, nearest)
            torch.from_numpy(reference)[None, None].float(), size=(100, 100), mode="nearest"
        )[0, 0]
        np.testing.assert_array_equal(resize_mask(mask, 448, 100).numpy(), reference.numpy())
