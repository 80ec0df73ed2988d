"""HiDDeN networks, whitening, decoder fine-tuning, the stable_signature and hidden schemes, CLI.

Everything here runs on tiny random models built from configs (a random tiny pipeline, a
small random extractor), so it tests the code paths, not the shipped weights; the shipped
extractor is covered by the generic contract tests and benchmarks/stable_signature.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import wmkit
from wmkit import data
from wmkit.diffusion import random_pipeline
from wmkit.errors import ConfigError, WeightsError
from wmkit.eval.metrics import binomial_upper_bound
from wmkit.watermarkers.decoder_finetune import finetune_decoder
from wmkit.keys import generate_key, save_key
from wmkit.models.hidden import (HiddenEncoder, HiddenExtractor, WhitenedExtractor, load_hidden,
                                 load_torchscript_extractor, period_candidates, reading_as_trained, rotation_candidates,
                                 save_hidden)

BITS = 48


def smooth(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def hidden_dir(tmp_path_factory):
    """A small random HiDDeN pair, whitened on random smooth images, saved like the shipped one."""
    torch.manual_seed(0)
    encoder, raw = HiddenEncoder(BITS, channels=8).eval(), HiddenExtractor(BITS, channels=8, layers=2).eval()
    extractor = WhitenedExtractor(raw, BITS)
    with torch.no_grad():
        extractor.fit_whitening(raw(smooth(200, seed=1)), centre=False)  # as the recipe fits it
    folder = tmp_path_factory.mktemp("hidden")
    save_hidden(encoder, extractor, folder, provenance={"test": True})
    return folder


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline(0)


class _BiasedExtractor(torch.nn.Module):
    """Correlated, biased, unequally scaled outputs: a fixed mix of 4x4 pooled pixels plus offsets."""

    def __init__(self, num_bits: int = 8):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.mix = torch.randn(num_bits, 48, generator=g) * torch.logspace(-1, 1, num_bits)[:, None]
        self.offset = torch.linspace(-3, 3, num_bits)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.mix.T + self.offset


def test_whitening_centres_and_decorrelates_clean_outputs():
    raw = _BiasedExtractor(8)
    noise = lambda n, seed: torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    whitened = WhitenedExtractor(raw, 8)
    whitened.fit_whitening(raw(noise(2000, 2)))
    out = whitened(noise(2000, 3))
    assert out.mean(0).abs().max() < 0.15
    assert torch.allclose(torch.cov(out.T), torch.eye(8), atol=0.15)
    before = (raw(noise(2000, 3)) > 0).float().mean(0)
    after = (out > 0).float().mean(0)
    assert (before - 0.5).abs().max() > 0.4 and (after - 0.5).abs().max() < 0.06  # biased bits become fair coins
    with pytest.raises(ValueError):
        whitened.fit_whitening(raw(noise(8, 4)))  # no more images than outputs: no covariance


def test_save_and_load_round_trip(hidden_dir, tmp_path):
    encoder, extractor, provenance = load_hidden(hidden_dir)
    x = smooth(2, seed=4)
    _, original, _ = load_hidden(hidden_dir)
    assert torch.allclose(extractor(x), original(x)) and provenance["test"] is True
    assert encoder(x, torch.ones(2, BITS)).shape == x.shape
    with pytest.raises(WeightsError, match="missing"):
        load_hidden(tmp_path)


def tiled(size: int = 128, seed: int = 0, amplitude: float = 0.04) -> torch.Tensor:
    """A smooth image plus one random 8 x 8 tile repeated over it (a stand-in for a mark)."""
    tile = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed + 100))
    return (smooth(1, size, seed) * 0.8 + 0.1 + amplitude * tile.repeat(1, 1, size // 8, size // 8)).clamp(0, 1)


def test_the_reading_leaves_out_what_every_phase_shares():
    # A read-out offset shared by all phases (here a large bias) is the same on every image: left
    # in, it would give every unmarked image the bits sign(bias). It must not decide any bit.
    extractor = HiddenExtractor(num_bits=16, channels=4, scale_candidates=0).eval()
    with torch.no_grad():
        extractor.linear.bias.copy_(torch.linspace(-40, 40, 16))
    images = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    pattern = extractor.linear.bias > 0
    with torch.no_grad():
        for bits in (extractor(images) > 0, extractor(images, phase=0) > 0):
            agreement = (bits == pattern).float().mean()
            assert 0.35 < float(agreement) < 0.65
            assert 0.2 < float(bits.float().mean(0).min()) and float(bits.float().mean(0).max()) < 0.8


def test_a_flat_image_reads_as_coins_not_as_one_fixed_message(hidden_dir):
    # Nothing to read: the edges' zero padding and a fitted offset each used to give every flat
    # image the same bits, a message some key would match on all of them.
    wm = wmkit.create("hidden", extractor=str(hidden_dir), calibration=None)
    flats = [torch.full((3, 64, 96), value) for value in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert float(wm.logits(flats).abs().max()) == 0.0
    bits = wm.extract(flats)
    assert (wm.extract(flats) == bits).all()  # the same coins on a second reading
    assert len({tuple(row) for row in bits}) == len(flats)
    assert 0.3 < bits.mean() < 0.7


def test_period_candidates_find_a_rescaled_tile():
    image = tiled(160)
    assert abs(period_candidates(image[0], 8)[0] / 8 - 1) < 0.01
    for factor in (1.37, 0.6):
        rescaled = F.interpolate(image, scale_factor=factor, mode="bilinear", align_corners=False, antialias=factor < 1)
        found = period_candidates(rescaled[0], 8, count=3)
        assert any(abs(t / (8 * factor) - 1) < 0.01 for t in found), (factor, found)


def _rotate(image: torch.Tensor, degrees: float) -> torch.Tensor:
    from wmkit.attacks import parse_attack

    return parse_attack(f"rotate:{degrees}")(image, generator=torch.Generator().manual_seed(0))


def test_rotation_candidate_finds_a_turned_tile_and_nothing_upright():
    image = tiled(256)
    assert rotation_candidates(image[0], 8, 30.0) == []  # upright: the period search's job
    for degrees in (4.0, -11.0):
        found = rotation_candidates(_rotate(image, degrees)[0], 8, 30.0)
        assert 1 <= len(found) <= 2, (degrees, found)
        period, angle = found[0]
        # resample turns back by ``angle``: the opposite of the turn, to 0.2 degree on 256 px
        # (the reading's half-pixel offsets take up what is left)
        assert abs(period / 8 - 1) < 0.005 and abs(angle + degrees) < 0.2, (degrees, found)


def test_the_shipped_extractor_reads_a_turned_photo_and_only_with_the_turn_search(monkeypatch):
    """The shipped pair (not a random one: which sub-pixel offset reads right is the trained
    read-out's property): a marked photo turned by 7 degrees is detected, and not without the
    rotation search; its unmarked original is not detected either way."""
    wm = wmkit.create("hidden")
    if wm.missing_default_model():
        pytest.skip("no shipped hidden weights")
    key = generate_key("hidden", seed=0)
    photo = data.crops(1, size=256, group="evaluation", seed=5)[0]
    marked = _rotate(wm.embed([photo], key)[0][None], 7.0)
    plain = _rotate(photo[None], 7.0)
    assert wm.detect(marked, key)[0].p_value < 1e-6
    assert wm.detect(plain, key)[0].p_value > 1e-3
    monkeypatch.setattr(HiddenExtractor, "MAX_ANGLE", 0.0)
    assert wm.detect(marked, key)[0].p_value > 1e-3


def test_extractor_reads_a_tiled_mark_the_same_after_shifts_crops_and_rescaling():
    """Translation invariance by construction (fold + phase search) and the rescaling search:
    a random, untrained extractor gives the same reading of a tiled pattern however the
    image is cropped, shifted or rescaled; without the search a rescaled copy reads differently."""
    torch.manual_seed(1)
    extractor = HiddenExtractor(BITS, channels=8, layers=2).eval()
    with torch.no_grad():  # no biases: the reading is the mark's alone, not a constant every image shares
        for module in extractor.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    image = 0.5 + 0.2 * (tiled(160, amplitude=0.3) - 0.5)
    cos = lambda a, b: float(F.cosine_similarity(a, b, dim=-1))  # noqa: E731
    with torch.no_grad():
        reference = extractor(image)
        assert cos(reference, extractor(image[..., 3:131, 5:149])) > 0.98  # a crop at an odd offset
        bigger = F.interpolate(image, scale_factor=1.3, mode="bilinear", align_corners=False)
        assert cos(reference, extractor(bigger)) > 0.9
        with reading_as_trained(extractor):
            assert extractor.scale_candidates == 0 and extractor.forced_phase == 0
            assert cos(reference, extractor(bigger)) < 0.8
            assert torch.equal(extractor(image), extractor(image, phase=0))
        assert extractor.scale_candidates == 3 and extractor.forced_phase is None
        # the phase forced by training reads one phase only
        assert extractor(image, phase=0).shape == (1, BITS)
    with pytest.raises(ValueError, match="period"):
        extractor(torch.rand(1, 3, 6, 6))


def test_the_window_prescreen_skips_rescalings_and_changes_no_reading(monkeypatch):
    """Rescaled readings are judged first on a small window (HiddenExtractor._may_win): the
    readings are those of the full search, marked or not, while unmarked images skip most of
    the rescaled readings (where the time goes)."""
    torch.manual_seed(1)
    extractor = HiddenExtractor(BITS, channels=8, layers=2).eval()
    host = F.avg_pool2d(torch.rand(1, 3, 324, 324, generator=torch.Generator().manual_seed(3)), 5, 1)
    marked = 0.8 * host + 0.2 * tiled(320, amplitude=0.3)
    full_readings = []
    original, screens = HiddenExtractor.phase_logits, HiddenExtractor.PRESCREEN

    def counting(self, images):
        full_readings.append(images.shape[-1])
        return original(self, images)

    monkeypatch.setattr(HiddenExtractor, "phase_logits", counting)
    with torch.no_grad():
        for image in (marked, host):
            for factor in (1.0, 1.3, 0.7):
                scaled = F.interpolate(image, scale_factor=factor, mode="bilinear", align_corners=False, antialias=factor < 1)
                monkeypatch.setattr(HiddenExtractor, "PRESCREEN", ())  # no pre-screen
                full_readings.clear()
                without = extractor(scaled)
                searched = len(full_readings)
                monkeypatch.setattr(HiddenExtractor, "PRESCREEN", screens)
                full_readings.clear()
                assert torch.equal(extractor(scaled), without), factor
                if image is host:
                    assert len(full_readings) < searched, (factor, full_readings)


def test_training_recipe_runs_a_few_steps_and_goes_on_from_its_output(tmp_path):
    from wmkit.train.hidden import train

    small = dict(size=32, batch=4, count=16, channels=8, whitening_crops=((64, 60),), log_every=1)
    first = train(out=tmp_path / "a", minutes=None, steps=3, **small)
    encoder, extractor, provenance = load_hidden(tmp_path / "a")
    assert first["steps"] == 3 and provenance["arch"]["period"] == 8 and extractor.extractor.scale_candidates == 3
    # --init FOLDER --steps 0: the same networks, only the whitening refitted
    again = train(out=tmp_path / "b", minutes=None, steps=0, init=tmp_path / "a", **small)
    _, refit, _ = load_hidden(tmp_path / "b")
    assert again["steps"] == 0 and again["init_provenance"]["steps"] == 3
    assert torch.equal(refit.extractor.linear.weight, extractor.extractor.linear.weight)


def test_a_version_1_extractor_folder_is_refused_with_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    for name in ("encoder", "extractor"):
        save_file({"w": torch.zeros(1)}, tmp_path / f"{name}.safetensors",
                  metadata={"format": "wmkit-hidden", "version": "1", "arch": '{"num_bits": 48, "side": 64}'})
    with pytest.raises(WeightsError, match="retrain"):
        load_hidden(tmp_path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_official_torchscript_extractor_loads_and_normalises(tmp_path):
    class Official(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(-2, -1)).repeat(1, 16)  # 48 outputs

    torch.jit.script(Official()).save(str(tmp_path / "dec_48b.pt"))
    extractor = load_torchscript_extractor(tmp_path / "dec_48b.pt")
    x = torch.full((1, 3, 32, 32), 0.485)
    assert extractor.num_bits == 48 and torch.allclose(extractor(x)[0, 0], torch.tensor(0.0), atol=1e-6)
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(WeightsError, match="TorchScript"):
        load_torchscript_extractor(tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="no such"):
        load_torchscript_extractor(tmp_path / "missing.pt")


def test_finetune_decoder_writes_the_message_and_keeps_the_image(pipe):
    extractor = WhitenedExtractor(_BiasedExtractor(BITS), BITS)
    extractor.fit_whitening(extractor.extractor(torch.rand(500, 3, 64, 64, generator=torch.Generator().manual_seed(9))))
    message = generate_key("stable_signature", seed=1).bits(BITS)
    images = list(smooth(8, seed=5))
    original = pipe.vae.decoder
    before = {k: v.clone() for k, v in original.state_dict().items()}
    decoder, report = finetune_decoder(pipe.vae, extractor, message, images=images, steps=30, lr=3e-3, progress=False)
    assert decoder is not original and all(torch.equal(v, original.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        z = torch.cat([pipe.vae.encode(img[None] * 2 - 1).latent_dist.mean for img in images])
        plain = (pipe.vae.decode(z).sample + 1) / 2
    plain_accuracy = float(((extractor(plain.clamp(0, 1)) > 0).float() == torch.as_tensor(message).float()).float().mean())
    assert report.bit_accuracy > max(0.8, plain_accuracy + 0.2), (report.bit_accuracy, plain_accuracy)
    assert len(report.losses) == 30 and np.isfinite(report.psnr_db)
    with pytest.raises(ConfigError, match="bits"):
        finetune_decoder(pipe.vae, extractor, message[:10], images=images, steps=1, progress=False)


def test_phase_margin_term_makes_phase_zero_the_one_the_search_picks():
    """Minimising phase_margin_loss over an image must leave phase 0 the phase the
    extractor's own rule (furthest from the phase average) chooses, by the margin."""
    from wmkit.watermarkers.decoder_finetune import PHASE_MARGIN, phase_margin_loss

    torch.manual_seed(0)
    extractor = HiddenExtractor(num_bits=8, channels=4, scale_candidates=0).eval().requires_grad_(False)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    start = float(phase_margin_loss(extractor, images).detach())
    assert start > 0  # a random extractor on random images: phase 0 is not special
    optimiser = torch.optim.Adam([images], lr=0.01)
    for _ in range(300):
        loss = phase_margin_loss(extractor, images)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        logits, _ = extractor.phase_logits(images)
        distance = (logits - logits.mean(1, keepdim=True)).pow(2).sum(-1)
    assert float(phase_margin_loss(extractor, images).detach()) < 0.05 * start
    assert distance.argmax(1).tolist() == [0, 0]
    assert bool((distance[:, 0].log() - distance[:, 1:].max(1).values.log() > 0.5 * PHASE_MARGIN).all())


def test_wrap_swaps_the_decoder_caches_it_and_unwrap_restores(pipe, hidden_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WMKIT_CACHE", str(tmp_path / "cache"))
    key = generate_key("stable_signature", seed=2)
    ss = wmkit.create("stable_signature", pipeline=pipe, extractor=str(hidden_dir), finetune_steps=3)
    assert ss.num_bits == BITS and ss.marks_at_generation() and ss.marks_existing_images()
    original = pipe.vae.decoder
    seed = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = pipe("a cat", num_inference_steps=2, generator=seed(), output_type="pt").images
    wrapped = wmkit.wrap(pipe, ss, key)
    assert pipe.vae.decoder is not original
    marked = wrapped("a cat", num_inference_steps=2, generator=seed(), output_type="pt").images
    assert not torch.equal(marked, plain)
    assert wrapped.unwrap() is pipe and pipe.vae.decoder is original
    assert torch.equal(pipe("a cat", num_inference_steps=2, generator=seed(), output_type="pt").images, plain)
    cached = ss.decoder_cache_path(key)
    assert cached.is_file() and key.fingerprint in cached.name
    # a new instance reuses the cached decoder instead of fine-tuning again
    import wmkit.watermarkers.decoder_finetune as finetune

    monkeypatch.setattr(finetune, "finetune_decoder", lambda *a, **k: pytest.fail("fine-tuned again"))
    again = wmkit.create("stable_signature", pipeline=pipe, extractor=str(hidden_dir), finetune_steps=3)
    images = smooth(2, size=64, seed=6)
    out = again.embed(images, key)  # post-hoc: the photo plus the key's watermark residual
    assert out.shape == images.shape and torch.equal(out, ss.embed(images, key))
    plain, through_key = again.round_trips(images, key)
    residual = torch.stack(through_key) - torch.stack(plain)
    assert float(residual.abs().max()) > 1e-3  # the decoder does write something
    assert torch.allclose(out, (images + residual).clamp(0, 1), atol=1e-6)
    # the photo keeps its own detail: closer to it than the round trip through the key's decoder
    assert float((out - images).pow(2).mean()) < float((torch.stack(through_key) - images).pow(2).mean())
    assert len(again.detect(out, key)) == 2
    with pytest.raises(ConfigError, match="pipeline"):
        wmkit.wrap(random_pipeline(1), again, key)  # made for another pipeline


def test_decoder_cache_tells_retrained_extractors_apart(pipe, hidden_dir, tmp_path, monkeypatch):
    """The same extractor path with new weights must not reuse a decoder made for the old ones."""
    import shutil

    monkeypatch.setenv("WMKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "extractor"
    shutil.copytree(hidden_dir, folder)
    key = generate_key("stable_signature", seed=5)
    before = wmkit.create("stable_signature", pipeline=pipe, extractor=str(folder)).decoder_cache_path(key)
    assert before == wmkit.create("stable_signature", pipeline=pipe, extractor=str(folder)).decoder_cache_path(key)
    encoder, extractor, _ = load_hidden(folder)
    with torch.no_grad():
        extractor.extractor.linear.bias.add_(0.5)  # "retrained"
    save_hidden(encoder, extractor, folder, provenance={})
    after = wmkit.create("stable_signature", pipeline=pipe, extractor=str(folder)).decoder_cache_path(key)
    assert after != before and key.fingerprint in after.name


def test_decoder_cache_tells_retrained_vaes_apart(hidden_dir, tmp_path, monkeypatch):
    """A pipeline whose VAE decoder was retrained (same name, new weights) must not reuse a
    decoder fine-tuned from the old one."""
    monkeypatch.setenv("WMKIT_CACHE", str(tmp_path / "cache"))
    key = generate_key("stable_signature", seed=5)
    pipe = random_pipeline(0)
    before = wmkit.create("stable_signature", pipeline=pipe, extractor=str(hidden_dir)).decoder_cache_path(key)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.bias.add_(0.01)  # "retrained"
    after = wmkit.create("stable_signature", pipeline=pipe, extractor=str(hidden_dir)).decoder_cache_path(key)
    assert after != before and key.fingerprint in after.name
    assert after == wmkit.create("stable_signature", pipeline=pipe, extractor=str(hidden_dir)).decoder_cache_path(key)


def test_hidden_marks_at_the_requested_psnr(hidden_dir):
    from wmkit.eval.metrics import psnr

    wm = wmkit.create("hidden", extractor=str(hidden_dir), psnr=36.0)
    key = generate_key("hidden", seed=3)
    images = smooth(3, size=64, seed=7) * 0.8 + 0.1  # no clipping at the edges of [0, 1]
    marked = wm.embed(images, key)
    for a, b in zip(images, marked):
        assert psnr(a, b) == pytest.approx(36.0, abs=0.05)
    results = wm.detect(marked, key)
    assert all(r.bits is not None and len(r.bits) == BITS for r in results)
    with pytest.raises(ConfigError):
        wmkit.create("hidden", psnr=5)


def test_a_given_payload_is_masked_on_the_image_and_shown_unmasked():
    """A regular payload (all zeros) is written as secret-random bits, so it cannot line up with
    what the extractor reads from an image with nothing to read; `bits` shows the payload."""
    wm = wmkit.create("hidden")
    n = wm.num_bits
    zeros = [generate_key("hidden", seed=s, message=[0] * n) for s in range(200)]
    wires = np.array([wm.message(k) for k in zeros])
    assert abs(wires.mean() - 0.5) < 0.02 and len({w.tobytes() for w in wires}) == len(zeros)
    derived = generate_key("hidden", seed=1)
    np.testing.assert_array_equal(wm.message(derived), derived.bits(n))  # derived keys unchanged
    # an image that reads all zeros (a flat one under JPEG, say) against every all-zeros key
    p = np.array([wm.results_from_signal(np.zeros((1, n), np.uint8), k)[0].p_value for k in zeros])
    assert np.mean(p < 1e-2) <= binomial_upper_bound(0.01, len(p), confidence=0.999)
    # without the mask every one of them would flag it at p = 2^-48
    assert wm.results_from_bits(np.zeros((1, n), np.uint8), np.zeros(n, np.uint8))[0].p_value < 1e-12
    payload = np.random.default_rng(4).integers(0, 2, n)
    key = generate_key("hidden", seed=5, message=payload.tolist())
    image = data.crops(1, size=256, group="evaluation", seed=2)[0]
    result = wm.detect(wm.embed([image], key), key)[0]
    assert result.p_value < 1e-6 and np.mean(np.array(result.bits) == payload) > 0.9
    assert not np.array_equal(wm.extract(wm.embed([image], key))[0], payload)  # on the image: masked


def test_decoders_of_keys_with_given_messages_are_named_by_them(hidden_dir):
    wm = wmkit.create("stable_signature", extractor=str(hidden_dir))
    key = generate_key("stable_signature", seed=8)
    a, b = (key.with_message(m) for m in ([0] * BITS, [1] * BITS))
    names = {wm.decoder_cache_path(k).name for k in (key, a, b)}
    assert len(names) == 3 and all(key.fingerprint in name for name in names)


def test_cli_keygen_finetune_embed_generate_verify(pipe, hidden_dir, tmp_path, monkeypatch, capsys):
    from wmkit.cli import main
    from wmkit.imageio import save_image

    monkeypatch.setenv("WMKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    opts = ["--pipeline", str(folder), "--extractor", str(hidden_dir)]
    key = tmp_path / "ss.json"
    save_key(generate_key("stable_signature", seed=4), key)  # (keygen's screening is tested for peers)
    assert main(["finetune-decoder", "-k", str(key), "--steps", "2", "-o", str(tmp_path / "dec.safetensors"), "--no-progress", *opts]) == 0
    assert (tmp_path / "dec.safetensors").is_file()
    assert "bit accuracy" in capsys.readouterr().err
    save_image(smooth(1, size=64, seed=8)[0], tmp_path / "in.png")
    assert main(["embed", "-m", "stable_signature", "-k", str(key), str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "-q", *opts]) == 0
    assert main(["generate", "-m", "stable_signature", "-k", str(key), "--prompt", "a cat", "-n", "1", "--steps", "2",
                 "-o", str(tmp_path / "gen"), "-q", *opts]) == 0
    assert main(["verify", "-m", "stable_signature", "-k", str(key), str(tmp_path / "out"), str(tmp_path / "gen"), "--json",
                 "--extractor", str(hidden_dir)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and all('"bit_accuracy"' in line for line in lines)
    # options that a method does not take are refused, not ignored
    assert main(["verify", "-m", "dwtdct", "-k", str(key), str(tmp_path / "out"), "--extractor", "x"]) != 0
    assert "does not apply" in capsys.readouterr().err


def test_smooth_encoder_keeps_its_residual_in_the_low_band(tmp_path):
    """--smooth: a fixed Gaussian low-pass on the encoder's residual, saved in the architecture."""
    from wmkit.train.hidden import train

    small = dict(size=32, batch=4, count=16, channels=8, whitening_crops=((64, 60),), log_every=1)
    train(out=tmp_path / "s", minutes=None, steps=2, smooth=1.2, **small)
    encoder, _, provenance = load_hidden(tmp_path / "s")
    assert provenance["arch"]["smooth"] == 1.2 and encoder.smooth == 1.2
    with torch.no_grad():
        residual = encoder(torch.rand(2, 3, 64, 64), torch.randint(0, 2, (2, encoder.num_bits)).float())
    power = torch.fft.rfft2(residual).abs().pow(2).mean(dim=(0, 1))
    f = torch.sqrt(torch.fft.fftfreq(64)[:, None] ** 2 + torch.fft.rfftfreq(64)[None, :] ** 2)
    assert float(power[f > 0.3].mean()) < 0.01 * float(power[(f > 0) & (f < 0.1)].mean())


def test_luminance_encoder_changes_luminance_only_and_is_saved_as_such(tmp_path):
    """--luminance: one residual channel added alike to R, G and B (JPEG halves chroma)."""
    from wmkit.train.hidden import train

    small = dict(size=32, batch=4, count=16, channels=8, whitening_crops=((64, 60),), log_every=1)
    train(out=tmp_path / "l", minutes=None, steps=2, luminance=True, **small)
    encoder, _, provenance = load_hidden(tmp_path / "l")
    assert provenance["arch"]["luminance"] is True and encoder.luminance
    with torch.no_grad():
        residual = encoder(torch.rand(2, 3, 64, 64), torch.randint(0, 2, (2, encoder.num_bits)).float())
    assert float(residual.abs().max()) > 0
    assert torch.equal(residual[:, 0], residual[:, 1]) and torch.equal(residual[:, 1], residual[:, 2])
    # the default encoder writes three channels of their own
    rgb = HiddenEncoder(num_bits=8, channels=8)
    with torch.no_grad():
        residual = rgb(torch.rand(1, 3, 16, 16), torch.ones(1, 8))
    assert not torch.equal(residual[:, 0], residual[:, 1])


def test_a_shipped_calibration_fitted_on_another_extractor_is_refused(hidden_dir, tmp_path, monkeypatch):
    import shutil

    from wmkit.calibration import fit_bit_null, shipped_calibration_path
    from wmkit.errors import WeightsError

    monkeypatch.setenv("WMKIT_WEIGHTS", str(tmp_path))
    shutil.copytree(hidden_dir, tmp_path / "hidden")
    wm = wmkit.create("hidden", calibration=None)
    bits = np.random.default_rng(0).integers(0, 2, (200, wm.num_bits))
    path = shipped_calibration_path("hidden", wm.config())
    for digest, ok in (("0" * 12, False), (wm.extractor_digest(), True)):
        fit_bit_null(bits, method="hidden", config=wm.config(), steps=20,
                     info={"extractor_digest": digest}).save(path, overwrite=True)
        fresh = wmkit.create("hidden")
        if ok:
            assert fresh.null_model is not None
        else:
            with pytest.raises(WeightsError, match="fitted on another extractor"):
                fresh.null_model


def test_the_shipped_hidden_calibration_serves_every_embedding_strength():
    """The calibration models the reading; the embedding strength does not change it."""
    default, stronger = wmkit.create("hidden"), wmkit.create("hidden", psnr=32.0)
    assert default.null_model is not None and stronger.null_model is not None
    assert stronger.config() == default.config()
    message = np.zeros(default.num_bits, np.uint8)
    assert np.allclose(stronger.null_model.log_null_pmf(message), default.null_model.log_null_pmf(message))


def test_damaged_decoder_cache_names_the_file_and_concurrent_first_uses_fine_tune_once(pipe, hidden_dir, tmp_path, monkeypatch):
    import threading

    import wmkit.watermarkers.decoder_finetune as finetune

    monkeypatch.setenv("WMKIT_CACHE", str(tmp_path / "cache"))
    key = generate_key("stable_signature", seed=12)
    real, calls = finetune.finetune_decoder, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_decoder", counting)
    instances = [wmkit.create("stable_signature", pipeline=pipe, extractor=str(hidden_dir), finetune_steps=1) for _ in range(3)]
    threads = [threading.Thread(target=wm.watermarked_decoder, args=(key,), kwargs={"progress": False}) for wm in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1  # the others waited for the lock and loaded the cached decoder
    cached = instances[0].decoder_cache_path(key)
    assert not [p for p in cached.parent.iterdir() if p.name.endswith(".tmp")]
    cached.write_bytes(cached.read_bytes()[:100])  # damaged, as a full disk or a killed copy would leave it
    fresh = wmkit.create("stable_signature", pipeline=pipe, extractor=str(hidden_dir), finetune_steps=1)
    with pytest.raises(WeightsError, match="damaged") as error:
        fresh.watermarked_decoder(key)
    assert str(cached) in str(error.value) and "delete it" in str(error.value)


def test_public_demo_key_uses_the_shipped_decoder(tmp_path, monkeypatch):
    """`wmkit demo`'s Stable Signature key finds its decoder in weights/demo-decoders, with an
    empty cache and without fine-tuning; it marks photos that verify; other keys do not match it."""
    import wmkit
    from wmkit import data
    from wmkit.demo import DEMO_KEY_SEED
    from wmkit.keys import generate_key
    from wmkit.watermarkers.stable_signature import shipped_decoder_path

    monkeypatch.setenv("WMKIT_CACHE", str(tmp_path))

    def no_finetune(*args, **kwargs):
        raise AssertionError("the demo key's decoder must not be fine-tuned")

    monkeypatch.setattr("wmkit.watermarkers.decoder_finetune.finetune_decoder", no_finetune)
    ss = wmkit.create("stable_signature")
    key = generate_key("stable_signature", seed=DEMO_KEY_SEED)
    cached = ss.decoder_cache_path(key)
    assert shipped_decoder_path(cached.name).is_file()
    marked = ss.embed(data.crops(2, size=256, group="evaluation", seed=3), key)
    assert all(r.p_value < 1e-6 for r in ss.detect(marked, key))
    assert not cached.exists()  # read in place: nothing copied into the user's cache
    other = generate_key("stable_signature", seed=DEMO_KEY_SEED + 1)
    assert not shipped_decoder_path(ss.decoder_cache_path(other).name).exists()


def test_a_luminance_front_end_ignores_colour_and_is_saved_with_the_extractor(hidden_dir, tmp_path):
    from wmkit.models.hidden import luminance_low_pass, with_front_end

    encoder, plain, _ = load_hidden(hidden_dir)
    clean = list(torch.rand(120, 3, 64, 64, generator=torch.Generator().manual_seed(7)))  # textured images
    front = with_front_end(plain, 1.0, clean)
    assert front.extractor.front_sigma == 1.0 and plain.extractor.front_sigma is None  # a copy: the original is untouched
    image = tiled(64, seed=3)
    # a change of colour that leaves the luminance alone: invisible to the front end, not to the plain reading
    chroma = torch.tensor([0.587, -0.299, 0.0]).view(1, 3, 1, 1) * 0.05 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    recoloured = image + chroma
    with torch.no_grad():
        assert torch.allclose(front(recoloured), front(image), atol=1e-4)
        assert not torch.allclose(plain(recoloured), plain(image), atol=1e-4)
        out = torch.cat([front(img[None]) for img in clean])
    # the whitening was refitted on what the front end reads: on those images the outputs' (uncentred)
    # second moments are the identity on the readings' span (this small extractor's span is not full)
    eigenvalues = torch.linalg.eigvalsh((out.T @ out / (len(out) - 1)).double())
    assert int(((eigenvalues - 1).abs() < 1e-3).sum()) >= 12 and float(eigenvalues.max()) < 1.001
    low = luminance_low_pass(image, 1.0)
    assert low.shape == image.shape and torch.equal(low[:, 0], low[:, 1]) and torch.equal(low[:, 1], low[:, 2])
    save_hidden(encoder, front, tmp_path / "front", provenance={})
    _, loaded, _ = load_hidden(tmp_path / "front")
    assert loaded.extractor.front_sigma == 1.0
    with torch.no_grad():
        assert torch.allclose(loaded(image), front(image), atol=1e-2)  # fp16 weights on disk
    with pytest.raises(ValueError, match="sigma"):
        with_front_end(plain, -1.0, clean)


def test_stable_signature_takes_an_extractor_front_and_says_so_in_its_config(hidden_dir, monkeypatch):
    monkeypatch.setattr("wmkit.watermarkers.stable_signature.FRONT_WHITENING_CROPS", ((64, 60),))  # a quick refit
    ss = wmkit.create("stable_signature", pipeline="tiny", extractor=str(hidden_dir), extractor_front=1.0)
    assert ss.config()["extractor_front"] == 1.0 and ss.extractor.extractor.front_sigma == 1.0
    plain = wmkit.create("stable_signature", pipeline="tiny", extractor=str(hidden_dir))
    assert "extractor_front" not in plain.config() and ss.extractor_digest() != plain.extractor_digest()
    for bad in (-1, "1", True, 9):
        with pytest.raises(ConfigError, match="extractor_front"):
            wmkit.create("stable_signature", extractor_front=bad)
