"""Generic contract tests: every registered watermarker gets them automatically."""
import os

import numpy as np
import pytest
import torch

import wmkit
from wmkit.errors import InputError, KeyFileError
from wmkit.keys import generate_key

METHODS = wmkit.list_watermarkers()
# Options that keep a scheme's set-up short here and change nothing the contract checks:
# Stable Signature fine-tunes a decoder per key (about half a minute each with these).
QUICK_OPTIONS = {"stable_signature": {"finetune_steps": 100, "finetune_size": 64, "finetune_lr": 3e-3}}


@pytest.fixture(scope="module")
def images(small_photos):
    return torch.stack(small_photos[:2])


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """Per-key files (Stable Signature's decoders) go to a cache of this module's own."""
    before = os.environ.get("WMKIT_CACHE")
    os.environ["WMKIT_CACHE"] = str(tmp_path_factory.mktemp("wmkit-cache"))
    yield
    if before is None:
        del os.environ["WMKIT_CACHE"]
    else:
        os.environ["WMKIT_CACHE"] = before


class Scheme:
    """A registered scheme and how its marked images are made: ``embed`` for post-hoc
    schemes; for those that mark at generation time, generations of the shipped tiny
    pipeline wrapped with the key (one per input image, fixed prompts and seeds, the
    inputs' count only), their unmarked twins standing in for the clean images."""

    PROMPTS = ["a photo of a cat", "a photo of the sea", "a photo of a rocket"]
    STEPS = 25  # PRC needs them: its checks read back weakly from 10-step generations

    def __init__(self, method):
        self.method = method
        self.wm = wmkit.create(method, **QUICK_OPTIONS.get(method, {}))
        missing = self.wm.missing_default_model()
        if missing:  # reported as a skip with its reason, never silently
            pytest.skip(f"{method}: {missing}")

    @property
    def generates(self) -> bool:
        return self.wm.marks_at_generation()

    def _generate(self, count, key=None):
        cached = _GENERATIONS.get((self.method, count, key.fingerprint if key else None))
        if cached is not None:
            return cached.clone()
        pipe = self.wm.pipe
        runner = wmkit.wrap(pipe, self.wm, key) if key is not None else pipe
        out = runner(self.PROMPTS[:count], num_inference_steps=self.STEPS, output_type="pt",
                     generator=[torch.Generator().manual_seed(s) for s in range(count)]).images.float().clamp(0, 1)
        if key is not None:
            runner.unwrap()
        _GENERATIONS[(self.method, count, key.fingerprint if key else None)] = out
        return out.clone()

    def mark(self, images, key):
        return self._generate(len(images), key) if self.generates else self.wm.embed(images, key)

    def clean(self, images):
        return self._generate(len(images)) if self.generates else images


_GENERATIONS: dict = {}


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_detects_with_tiny_p_value(method, images):
    scheme = Scheme(method)
    wm, key = scheme.wm, generate_key(method, seed=1)
    marked = scheme.mark(images, key)
    assert marked.shape[0] == len(images) and marked.dtype == images.dtype
    assert float(marked.min()) >= 0 and float(marked.max()) <= 1
    results = wm.detect(marked, key)
    clean = wm.detect(scheme.clean(images), key)
    assert len(results) == len(images)
    for r, c in zip(results, clean):
        assert r.method == method
        assert 0.0 <= r.p_value <= 1.0 and 0.0 <= r.p_value_analytic <= 1.0
        assert r.p_value < c.p_value  # marking moves every image towards the key
    # schemes may fail on some images (DwtDct on flat ones); per-scheme rates are tested elsewhere
    assert sum(r.detected(1e-3) for r in results) >= len(results) / 2, results
    other = wm.detect(marked, generate_key(method, seed=2))  # the wrong key does not verify
    assert all(not r.detected(1e-3) for r in other)
    if scheme.generates and wm.marks_existing_images():  # Stable Signature marks given images too
        embedded = wm.embed(images, key)
        assert embedded.shape == images.shape and float(embedded.min()) >= 0 and float(embedded.max()) <= 1
        assert sum(r.detected(1e-3) for r in wm.detect(embedded, key)) >= len(images) / 2


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_single_calls(method, images):
    scheme = Scheme(method)
    wm, key = scheme.wm, generate_key(method, seed=3)
    batch = scheme.mark(images, key)
    if wm.marks_existing_images():  # a batch, single images and a list embed to the same bytes
        embedded = wm.embed(images, key) if scheme.generates else batch
        singles = torch.stack([wm.embed([img], key)[0] for img in images])
        assert torch.equal(embedded, singles)
        as_list = wm.embed(list(images), key)
        assert isinstance(as_list, list) and torch.equal(torch.stack(as_list), embedded)
    batch_results = wm.detect(batch, key)
    single_results = [wm.detect([img], key)[0] for img in batch]
    assert [r.p_value for r in batch_results] == [r.p_value for r in single_results]


@pytest.mark.parametrize("method", METHODS)
def test_same_key_same_bytes(method, images):
    scheme = Scheme(method)
    a = scheme.mark(images, generate_key(method, seed=4))
    _GENERATIONS.clear()  # made again, by a new instance
    fresh = Scheme(method)
    b = fresh.mark(images, generate_key(method, seed=4))
    assert torch.equal(a, b)
    c = scheme.mark(images, generate_key(method, seed=5))
    assert not torch.equal(a, c)


@pytest.mark.parametrize("method", METHODS)
def test_rejects_foreign_keys_and_bad_images(method, images):
    wm = Scheme(method).wm
    with pytest.raises(KeyFileError):
        wm.detect(images, generate_key("some-other-method", seed=1))
    with pytest.raises(InputError):
        wm.detect([images[0] * 2], generate_key(method, seed=1))  # values outside [0, 1]
    if wm.min_pixels or wm.min_side:
        # a side just under the scheme's minimum (or half the side its pixel minimum implies)
        side = wm.min_side - 1 if wm.min_side else int(np.sqrt(wm.min_pixels)) // 2
        with pytest.raises(InputError, match="minimum"):
            (wm.detect if wm.marks_at_generation() else wm.embed)([torch.rand(3, side, side)], generate_key(method, seed=1))


@pytest.mark.parametrize("method", METHODS)
def test_identification_picks_the_right_key_and_corrects(method, images):
    scheme = Scheme(method)
    wm = scheme.wm
    keys = [generate_key(method, seed=s) for s in (10, 11, 12)]
    marked = scheme.mark(images, keys[1])
    for r, single in zip(wm.identify(marked, keys), wm.detect(marked, keys[1])):
        assert r.extra["key_index"] == 1 and r.extra["num_keys"] == 3
        assert single.p_value <= r.p_value <= min(1.0, 3 * single.p_value) + 1e-300
