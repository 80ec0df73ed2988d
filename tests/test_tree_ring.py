"""Tree-Ring: patterns, latent statistics, the test's null, wrapping SD/SDXL (random tiny pipelines; the CLI in test_cli)."""

import numpy as np
import pytest
import torch
from scipy import stats as sps

import wmkit
from wmkit.calibration import fit_score_null
from wmkit.keys import generate_key
from wmkit.watermarkers.tree_ring import PATTERNS, independent_half, key_region


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("channel", ["all", -1])
def test_pattern_is_written_exactly_and_latents_stay_real(pattern, channel, pipe, noise):
    tr = wmkit.create("tree_ring", pattern=pattern, channel=channel, pipeline=pipe, calibration=None)
    key = generate_key("tree_ring", seed=1)
    marked = tr.watermark_latents(noise[:4], key)
    mask, targets = tr.key_parts(key, 32, 32)
    assert sorted(targets) == ([0, 1, 2, 3] if channel == "all" else [3])
    for c, target in targets.items():
        spectrum = torch.fft.fftshift(torch.fft.fft2(marked[:, c].double()), dim=(-2, -1))
        assert torch.allclose(spectrum[:, mask], target[mask].expand(4, -1), atol=1e-3)
    untouched = [c for c in range(4) if c not in targets]
    assert torch.equal(marked[:, untouched], noise[:4, untouched])  # other channels untouched
    assert torch.equal(tr.watermark_latents(noise[:4], key), marked)  # deterministic from the key
    other = tr.watermark_latents(noise[:4], generate_key("tree_ring", seed=2))
    # 'zeros' carries no secret (as in the reference): every key writes the same pattern
    assert torch.allclose(other, marked) == (pattern == "zeros")
    if channel == "all" and pattern == "rand":  # one independent pattern per channel
        assert not torch.allclose(targets[0][mask], targets[1][mask])


def test_defaults_mark_every_channel_over_a_quarter_of_the_latent(pipe):
    tr = wmkit.create("tree_ring", pipeline=pipe, calibration=None)
    assert tr.config() == {"pattern": "rand", "channel": "all", "radius": None, "inversion_steps": 10, "search": True}
    assert tr._radius_for(32, 32) == 8 and tr._radius_for(64, 64) == 16
    # the reference's single channel keeps its r = 10 on 64 x 64 latents
    assert wmkit.create("tree_ring", channel=3, pipeline=pipe)._radius_for(64, 64) == 10
    with pytest.raises(wmkit.ConfigError, match="zeros"):
        wmkit.create("tree_ring", pattern="zeros", search=True, pipeline=pipe)
    assert wmkit.create("tree_ring", pattern="zeros", pipeline=pipe).search is False
    with pytest.raises(wmkit.ConfigError, match="channel"):
        wmkit.create("tree_ring", channel="first", pipeline=pipe)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_marked_latents_keep_the_scheduler_statistics(pattern, pipe, noise):
    """What the sampler expects: zero mean, unit variance per latent (checked over 200 draws)."""
    tr = wmkit.create("tree_ring", pattern=pattern, pipeline=pipe, calibration=None)
    marked = torch.stack([tr.watermark_latents(noise[:25], generate_key("tree_ring", seed=s)) for s in range(8)])
    assert abs(float(marked.mean())) < 0.02
    # 'rand' keeps white-noise statistics exactly. 'zeros' removes the key region's energy
    # (variance 1 - |M| / hw); 'ring' keeps only real ring values, half the energy on average.
    lost = {"rand": 0.0, "ring": 0.5, "zeros": 1.0}[pattern] * int(key_region(32, 32, 8).sum()) / 1024
    assert abs(float(marked.std()) - np.sqrt(1 - lost)) < 0.015
    if pattern == "rand":  # the spectrum of Gaussian noise: marginally exactly N(0, 1)
        assert sps.kstest(marked.flatten().numpy()[::7], "norm").pvalue > 0.001


def test_region_excludes_dc_and_uses_independent_coefficients():
    region = key_region(32, 32, 5)
    half = independent_half(32, 32)
    assert not region[16, 16]  # DC
    # one of each conjugate pair: the half has exactly half of the region
    assert int((region & half).sum()) * 2 == int(region.sum())


@pytest.mark.parametrize("pattern", PATTERNS)
def test_analytic_p_values_are_uniform_on_white_noise(pattern, pipe, noise):
    tr = wmkit.create("tree_ring", pattern=pattern, search=False, pipeline=pipe, calibration=None)
    log_p = tr.analytic_log_p(noise, generate_key("tree_ring", seed=4))[0]
    assert sps.kstest(np.exp(log_p), "uniform").pvalue > 0.001


def _structured_latent() -> torch.Tensor:
    """Far from white noise: a strong 1/f spectrum, a ramp and a bright blob, as an inverted
    photo's latent can be. The key-randomisation test must stay exact on it."""
    g = torch.Generator().manual_seed(11)
    spectrum = torch.fft.fft2(torch.randn(4, 32, 32, generator=g, dtype=torch.float64))
    f = torch.fft.fftfreq(32, dtype=torch.float64)
    spectrum = spectrum / (torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2) + 0.02)
    latent = torch.fft.ifft2(spectrum).real
    ramp = torch.linspace(-3, 3, 32, dtype=torch.float64)
    return (latent / latent.std() + ramp[None, :, None] + 4.0 * (ramp[None, None, :].abs() < 0.5)).float()[None]


@pytest.mark.parametrize("pattern", ["rand", "ring"])
@pytest.mark.parametrize("search", [False, True])
def test_key_randomised_p_value_is_exact_for_any_fixed_image(pattern, search, pipe):
    """The guarantee behind the analytic p-value: over random keys it is uniform for ONE fixed
    latent, however non-white (no model of the image is involved); with the geometric search
    (Bonferroni over its candidates) it may only be conservative."""
    tr = wmkit.create("tree_ring", pattern=pattern, search=search, pipeline=pipe, calibration=None)
    latent = _structured_latent()
    p = np.array([np.exp(tr.analytic_log_p(latent, generate_key("tree_ring", seed=1000 + s))[0][0])
                  for s in range(1500 if not search else 600)])
    if not search:
        assert sps.kstest(p, "uniform").pvalue > 0.001
    for alpha in (0.01, 0.05):
        assert np.mean(p < alpha) <= sps.binom.ppf(0.999, p.size, alpha) / p.size


def test_energy_test_of_zeros_is_not_exact_on_structured_images(pipe):
    """'zeros' has no key randomness: on a non-white latent its white-noise model fails
    (why it relies on the empirical calibration)."""
    tr = wmkit.create("tree_ring", pattern="zeros", pipeline=pipe, calibration=None)
    log_p = tr.analytic_log_p(_structured_latent(), generate_key("tree_ring", seed=1))[0][0]
    assert log_p > np.log(0.999)  # low frequencies hold far more than their share: never 'zeros'


def test_marked_noise_is_detected_and_ring_evidence_is_capped_by_its_key(pipe, noise):
    key = generate_key("tree_ring", seed=4)
    rand = wmkit.create("tree_ring", pattern="rand", pipeline=pipe, calibration=None)
    log_p = rand.analytic_log_p(rand.watermark_latents(noise[:8], key), key)[0]
    assert np.all(log_p < np.log(1e-20)) and np.all(np.isfinite(log_p))
    zeros = wmkit.create("tree_ring", pattern="zeros", pipeline=pipe, calibration=None)
    assert np.all(zeros.analytic_log_p(zeros.watermark_latents(noise[:8], key), key)[0] < np.log(1e-20))
    ring = wmkit.create("tree_ring", pattern="ring", channel=-1, search=False, pipeline=pipe, calibration=None)
    z = ring.analytic_log_p(ring.watermark_latents(noise[:8], key), key)[2]["z"]
    # Cauchy-Schwarz: z <= |k| / sqrt(hw/2) with k the 5 ring values, however strong the mark
    _, patterns = ring.key_parts(key, 32, 32)
    ring_values = patterns[3][16, 17:22].real.double()
    cap = float(torch.sqrt((ring_values**2).sum() / 512))
    assert np.all(z <= cap + 1e-9) and np.all(z > 0.5 * cap)


def test_search_finds_rotated_and_zoomed_marks_and_counts_itself_in_the_p_value(pipe, noise):
    from wmkit.watermarkers.tree_ring import _undo

    key = generate_key("tree_ring", seed=6)
    tr = wmkit.create("tree_ring", pipeline=pipe, calibration=None)
    plain = wmkit.create("tree_ring", search=False, pipeline=pipe, calibration=None)
    marked = tr.watermark_latents(noise[:6], key)
    rotated = _undo(marked, -21.0, 1.0)  # undoing -21 degrees is rotating by 21
    zoomed = _undo(marked, 0.0, 1 / 1.155)  # a zoom-in by 1.155 about the centre
    for attacked, angle, zoom in [(rotated, 21.0, 1.0), (zoomed, 0.0, 1.155)]:
        log_p, _, extra = tr.analytic_log_p(attacked, key)
        assert np.all(extra["search_angle"] == angle) and np.all(extra["search_zoom"] == zoom)
        assert np.all(log_p < np.log(1e-6))
        plain_log_p = plain.analytic_log_p(attacked, key)[0]
        assert np.all(log_p < plain_log_p - np.log(1e6))  # far stronger than without the search
    # untransformed: the identity keeps nearly all its power (a factor 2 for the search)
    log_p_search = tr.analytic_log_p(marked, key)[0]
    log_p_plain = plain.analytic_log_p(marked, key)[0]
    assert np.allclose(log_p_search, np.log(2) + log_p_plain)


def test_score_null_recalibrates_a_biased_analytic_test():
    rng = np.random.default_rng(0)
    # an analytic test that is too optimistic: z ~ N(-0.7, 1.6^2) instead of N(0, 1)
    z_fit, z_new = rng.normal(-0.7, 1.6, 400), rng.normal(-0.7, 1.6, 20000)
    model = fit_score_null(sps.norm.logcdf(z_fit), method="tree_ring", config={}, model="x")
    p_analytic = sps.norm.cdf(z_new)
    p_cal = np.exp(model.log_p_value(sps.norm.logcdf(z_new)))
    for alpha in (1e-2, 1e-3):
        assert np.mean(p_analytic < alpha) > 3 * alpha  # the analytic test is badly off...
        assert np.mean(p_cal < alpha) <= sps.binom.ppf(0.999, z_new.size, alpha) / z_new.size  # ...the calibrated one is not


def test_score_null_is_never_more_liberal_than_the_analytic_test():
    """A null that looks narrower than N(0, 1) (or shifted up) must not shrink the p-values."""
    rng = np.random.default_rng(1)
    z_fit = rng.normal(0.3, 0.7, 2000)  # "too cautious" analytic scores
    model = fit_score_null(sps.norm.logcdf(z_fit), method="tree_ring", config={}, model="x")
    assert model.scale == 1.0 and model.mu == 0.0
    assert model.info["scale_bound"] < 1 and model.info["mu_bound"] > 0  # what the data alone would have said
    z_new = np.linspace(-6, 2, 50)
    assert np.all(model.log_p_value(sps.norm.logcdf(z_new)) >= sps.norm.logcdf(z_new) - 1e-12)


def test_wrap_stable_diffusion_uses_public_latents_hook(pipe):
    tr = wmkit.create("tree_ring", pipeline=pipe, calibration=None)
    key = generate_key("tree_ring", seed=5)
    calls = {}
    original_call = type(pipe).__call__

    def spy(self, *args, **kwargs):
        calls.update(kwargs)
        return original_call(self, *args, **kwargs)

    wrapped = wmkit.wrap(pipe, tr, key)
    type(pipe).__call__ = spy
    try:
        generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
        out = wrapped("a photo", num_images_per_prompt=2, num_inference_steps=2, generator=generators, output_type="pt")
    finally:
        type(pipe).__call__ = original_call
    assert out.images.shape == (2, 3, 256, 256)
    expected = torch.stack([torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(s)) for s in (1, 2)])
    assert torch.allclose(calls["latents"], tr.watermark_latents(expected, key))  # per-image seeds honoured
    restored = wrapped.unwrap()
    assert restored is pipe
    a = restored("a photo", num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="pt").images
    b = pipe("a photo", num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="pt").images
    assert torch.equal(a, b)
    with pytest.raises(wmkit.ConfigError):
        wrapped("a photo")


def _tiny_sdxl():
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from wmkit.train.tiny_ldm import build_tokenizer

    torch.manual_seed(0)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(Path(tmp))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1,
    )
    config = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=len(tokenizer), projection_dim=32, max_position_embeddings=77,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=16,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(config), text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1),
    )


def test_wrap_sdxl():
    pipe = _tiny_sdxl()
    pipe.set_progress_bar_config(disable=True)
    tr = wmkit.create("tree_ring", pipeline=pipe, radius=2, calibration=None)
    key = generate_key("tree_ring", seed=6)
    wrapped = wmkit.wrap(pipe, tr, key)
    out = wrapped(["a", "b"], num_inference_steps=2, height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert out.images.shape[0] == 2
    plain = pipe(["a", "b"], num_inference_steps=2, height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert not torch.equal(out.images, plain.images)  # the mark changed the outputs
    assert wrapped.unwrap() is pipe


def test_detect_and_identify_run_end_to_end(pipe):
    tr = wmkit.create("tree_ring", pipeline=pipe, inversion_steps=2, calibration=None)
    keys = [generate_key("tree_ring", seed=s) for s in (7, 8)]
    images = torch.rand(2, 3, 256, 256)
    results = tr.detect(images, keys[0])
    assert len(results) == 2 and all(0 <= r.p_value <= 1 for r in results)
    ident = tr.identify(images, keys)
    assert all(r.extra["num_keys"] == 2 for r in ident)
    with pytest.raises(wmkit.ConfigError, match="generation time"):
        tr.embed(images, keys[0])
    with pytest.raises(wmkit.InputError, match="one size per call"):  # not a torch.cat traceback
        tr.detect([images[0], torch.rand(3, 128, 128)], keys[0])


def test_angle_scan_finds_the_peak_coarse_to_fine_and_gives_up_on_nothing():
    from wmkit.watermarkers.initial_noise import scan_angles

    for centre in (-12.0, 5.0, 20.0):
        for peak in np.arange(centre - 4, centre + 5):
            calls = []

            def score(angles):
                calls.append(list(angles))
                return [8.0 - abs(a - peak) * 1.5 for a in angles]  # a mark peaking at `peak`, falling off both ways

            best, scores = scan_angles(centre, score)
            assert best == peak, (centre, peak, scores)
            read = [a for batch in calls for a in batch]
            assert len(read) <= 5 and len(set(read)) == len(read)
            assert set(scores) == set(read)
            assert len(calls) == 2 and len(calls[0]) == 3  # one batch per round: the first readings, then the refinement
    # the identity is never a candidate; a centre next to it reads its neighbours
    best, scores = scan_angles(1.0, lambda angles: [-abs(a) for a in angles], window=1.0)
    assert 0.0 not in scores and best in (1.0, 2.0) and set(scores) == {1.0, 2.0}
    best, scores = scan_angles(0.0, lambda angles: list(angles), window=1.0)
    assert set(scores) == {-1.0, 1.0} and best == 1.0
    # nothing reaches the give-up level: only the first readings are made
    calls = []
    scan_angles(10.0, lambda angles: calls.extend(angles) or [1.0] * len(angles), give_up_below=2.5)
    assert sorted(calls) == [7.0, 10.0, 13.0]
