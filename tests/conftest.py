import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may download
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def eval_photos_256():
    """Distinct 256x256 crops of the offline evaluation photos (never used to fit shipped calibrations)."""
    from wmkit import data

    return data.crops(32, size=256, group="evaluation", seed=11)


@pytest.fixture(scope="session")
def small_photos(eval_photos_256):
    return eval_photos_256[:3]
