import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may download
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def pipe():
    """A tiny diffusion pipeline with random weights (per module: some tests patch it)."""
    from wmkit.diffusion import random_pipeline

    return random_pipeline(seed=0)


@pytest.fixture(scope="module")
def noise():
    """200 standard normal initial latents of the tiny pipelines' shape."""
    return torch.randn(200, 4, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def eval_photos_256():
    """Distinct 256x256 crops of the offline evaluation photos (never used to fit shipped calibrations)."""
    from wmkit import data

    return data.crops(32, size=256, group="evaluation", seed=11)


@pytest.fixture(scope="session")
def small_photos(eval_photos_256):
    return eval_photos_256[:3]
