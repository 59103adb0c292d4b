"""Helpers for the export tests: a synthetic site and a tiny network trained on it.

The site comes from ``fedseg data synth`` at 6 mm (40x40x26 voxels, real anatomy); the
tiny residual U-Net (4 filters, depth 2) is trained for about ten seconds on its whole cropped
cases, enough for confident, non-trivial predictions (random weights give probabilities
near 0.5, where any rounding flips labels, which says nothing about quantization).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedseg.data.cases import discover_cases, load_case
from fedseg.data.labels import labels_to_regions
from fedseg.data.preprocess import crop_and_normalize
from fedseg.data.synth import SynthConfig, generate_dataset
from fedseg.model.config import NetworkConfig

TINY = NetworkConfig(base_filters=4, depth=2)
TINY_ROI = (24, 24, 24)


def synth_site(root: Path, cases: int = 3) -> Path:
    """One synthetic site of ``cases`` labelled cases at 6 mm; returns its folder."""
    generate_dataset(root, SynthConfig(sites=1, cases_per_site=cases, seed=3, spacing=6.0))
    return root / "site1"


def train_tiny(site: Path, path: Path, steps: int = 150, seed: int = 0) -> Path:
    """Train the tiny network on the site's whole (cropped, padded) cases; save a model file."""
    import torch

    from fedseg.model.losses import mirrored_dice_loss
    from fedseg.model.model_file import ModelFile, save_model
    from fedseg.model.registry import build_network
    from fedseg.model.weights import get_weights

    torch.manual_seed(seed)
    net = build_network(TINY)
    data = []
    for case in discover_cases(site):
        vol = load_case(case)
        assert vol.label is not None
        image, box = crop_and_normalize(vol.image)
        regions = labels_to_regions(vol.label[box]).astype(np.float32)
        pad = [(0, 0)] + [(0, -s % TINY.divisor) for s in image.shape[1:]]
        data.append((torch.from_numpy(np.pad(image, pad)[None]),
                     torch.from_numpy(np.pad(regions, pad)[None])))  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    for step in range(steps):
        x, y = data[step % len(data)]
        loss = mirrored_dice_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model = ModelFile(TINY, get_weights(net), TINY_ROI, meta={"trained_steps": steps})
    return save_model(path, model)
