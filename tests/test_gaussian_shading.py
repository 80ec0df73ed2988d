"""Gaussian Shading: the marked noise's distribution, per-image nonces, the exact null over keys and
under other keys, the message, the geometric search, wrapping, identification (the CLI in test_cli)."""

import numpy as np
import pytest
import torch
from scipy import stats as sps

import wmkit
from wmkit.errors import ConfigError
from wmkit.eval.metrics import binomial_upper_bound
from wmkit.keys import generate_key
from wmkit.watermarkers.initial_noise import _undo


def _gs(pipe, **options):
    return wmkit.create("gaussian_shading", pipeline=pipe, calibration=None, **options)


def test_marked_noise_keeps_its_magnitudes_takes_the_key_signs_and_stays_standard_normal(pipe, noise):
    gs = _gs(pipe)
    key = generate_key("gaussian_shading", seed=1)
    marked = gs.watermark_latents(noise, key)
    assert torch.equal(marked.abs(), noise.abs())
    patterns = gs.patterns(key, 4096)
    for z, m in zip(noise[:5], marked[:5]):
        expected = np.unpackbits(patterns[gs.nonce_of(z)]).astype(bool)
        assert np.array_equal((m.reshape(-1) < 0).numpy(), expected)
    values = marked.reshape(-1).double().numpy()
    assert sps.kstest(values, "norm").pvalue > 1e-3
    assert abs((values < 0).mean() - 0.5) < 0.01
    # per value across images, signs are fair coins too (no position keeps one sign)
    per_position = (marked.reshape(len(marked), -1) < 0).float().mean(0).numpy()
    assert abs(per_position.mean() - 0.5) < 0.01 and per_position.std() < 0.05
    assert torch.equal(gs.watermark_latents(noise[:3], key), marked[:3])  # deterministic for the same noise


def test_every_image_draws_its_own_nonce_and_the_same_noise_the_same_one(pipe, noise):
    gs = _gs(pipe)
    nonces = [gs.nonce_of(z) for z in noise]
    assert len(set(nonces)) >= 190  # 200 draws from 4096: about 5 colliding pairs expected
    assert gs.nonce_of(noise[0].clone()) == nonces[0]
    assert {_gs(pipe, nonce_bits=0).nonce_of(z) for z in noise[:10]} == {0}
    # images marked under different nonces share no sign pattern: agreement is that of coins
    marked = gs.watermark_latents(noise[:2], generate_key("gaussian_shading", seed=1))
    assert abs(float(((marked[0] < 0) == (marked[1] < 0)).float().mean()) - 0.5) < 0.05


@pytest.mark.parametrize("search", [False, True])
def test_p_value_holds_over_keys_for_a_fixed_unmarked_latent(pipe, search):
    """For one fixed latent (structured, far from white noise), p-values over many keys are
    never below their level more often than the binomial bound allows."""
    gs = _gs(pipe, nonce_bits=2, search=search)
    y = torch.linspace(-1, 1, 32)
    latent = (torch.sin(6 * y)[None, :, None] * torch.cos(3 * y)[None, None, :]).expand(4, -1, -1)[None]
    latent = latent + 0.3 * torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    prepared = gs._prepare(latent)
    p = np.array([np.exp(gs._scored(latent, generate_key("gaussian_shading", seed=100 + s), prepared=prepared)[0][0])
                  for s in range(300)])
    for alpha in (0.01, 0.05, 0.2):
        assert np.mean(p < alpha) <= binomial_upper_bound(alpha, len(p), confidence=0.999)


def test_without_a_search_the_p_value_is_exact_not_just_conservative(pipe, noise):
    """nonce_bits=0, no search: agreements of a fixed latent over keys are Binomial(n, 1/2),
    so p-values are uniform: too few small ones would mean lost power, too many a broken null."""
    gs = _gs(pipe, nonce_bits=0, search=False)
    latent = noise[:1]
    p = np.array([np.exp(gs.analytic_log_p(latent, generate_key("gaussian_shading", seed=500 + s))[0][0])
                  for s in range(400)])
    for alpha in (0.1, 0.3, 0.5):
        low, high = sps.binom.ppf([0.0005, 0.9995], len(p), alpha) / len(p)
        assert low <= np.mean(p < alpha) <= high


def test_marks_of_other_keys_are_not_detected_and_the_own_key_is(pipe, noise):
    gs = _gs(pipe, search=False)
    keys = [generate_key("gaussian_shading", seed=s) for s in range(40)]
    marked = gs.watermark_latents(noise[:20], keys[0])
    own = np.array([r.p_value for r in gs.results_from_signal(marked, keys[0])])
    assert np.all(own < 1e-100)
    others = np.array([r.p_value for k in keys[1:] for r in gs.results_from_signal(marked, k)])
    assert np.mean(others < 0.05) <= binomial_upper_bound(0.05, len(others), confidence=0.999)


def test_message_survives_a_third_of_the_signs_flipped(pipe, noise):
    gs = _gs(pipe, search=False)
    key = generate_key("gaussian_shading", seed=4)
    marked = gs.watermark_latents(noise[:4], key)
    flips = torch.rand(marked.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    results = gs.results_from_signal(torch.where(flips, -marked, marked), key)
    message = tuple(int(b) for b in gs.message(key))
    for r in results:
        assert r.p_value < 1e-20
        assert r.bit_accuracy >= 0.85 and len(r.bits) == 256  # 16 votes at 0.7 each: about 0.93 expected
    exact = gs.results_from_signal(marked, key)
    assert all(r.bits == message and r.bit_accuracy == 1.0 for r in exact)


def test_the_search_reads_a_rotated_latent_and_counts_itself(pipe, noise):
    key = generate_key("gaussian_shading", seed=5)
    gs, plain = _gs(pipe), _gs(pipe, search=False)
    marked = gs.watermark_latents(noise[:3], key)
    rotated = _undo(marked, -12.0, 1.0)  # the latent of an image rotated by 12 degrees, roughly
    with_search = gs.results_from_signal(rotated, key)
    without = plain.results_from_signal(rotated, key)
    for a, b in zip(with_search, without):
        assert a.p_value < 1e-6 < b.p_value
        assert a.extra["search_angle"] == 12.0
    # the search's price on an unrotated mark: the factor 2 of the identity's half level
    straight = gs.results_from_signal(marked, key)[0].extra["log10_p_value"]
    assert straight == pytest.approx(plain.results_from_signal(marked, key)[0].extra["log10_p_value"] + np.log10(2))


def test_wrap_marks_the_noise_the_pipeline_would_have_drawn(pipe):
    from diffusers.utils.torch_utils import randn_tensor

    gs = _gs(pipe)
    key = generate_key("gaussian_shading", seed=6)
    kwargs = gs.pipeline_hook(key).call_kwargs(pipe, ("a cat",), {"generator": torch.Generator().manual_seed(3)})
    drawn = randn_tensor(kwargs["latents"].shape, generator=torch.Generator().manual_seed(3), dtype=kwargs["latents"].dtype)
    assert torch.equal(kwargs["latents"].abs(), drawn.abs())
    assert gs.results_from_signal(kwargs["latents"], key)[0].p_value < 1e-100
    with wmkit.wrap(pipe, gs, key) as marked_pipe:
        out = marked_pipe("a cat", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(3))
    assert out.images.shape[0] == 1


def test_bad_options_are_refused(pipe):
    with pytest.raises(ConfigError, match="nonce_bits"):
        _gs(pipe, nonce_bits=21)
    with pytest.raises(ConfigError, match="num_bits"):
        _gs(pipe, num_bits=0)
    with pytest.raises(ConfigError, match="cannot carry"):
        _gs(pipe, num_bits=8192).watermark_latents(torch.randn(1, 4, 32, 32), generate_key("gaussian_shading", seed=1))
    with pytest.raises(ConfigError, match="generation time"):
        _gs(pipe).embed(torch.rand(1, 3, 64, 64), generate_key("gaussian_shading", seed=1))


def test_shipped_pipeline_generations_are_detected_identified_and_survive_jpeg():
    """End to end on the shipped tiny pipeline: real inversion error, one key among five."""
    from wmkit.attacks import parse_attack
    from wmkit.diffusion import load_pipeline

    tiny = load_pipeline("tiny")
    gs = wmkit.create("gaussian_shading", pipeline=tiny)
    keys = [generate_key("gaussian_shading", seed=40 + s) for s in range(5)]
    with wmkit.wrap(tiny, gs, keys[3]) as marked_pipe:
        marked = [marked_pipe(p, num_inference_steps=10, output_type="pt",
                              generator=torch.Generator().manual_seed(s)).images[0].float().clamp(0, 1)
                  for s, p in enumerate(["a photo of a cat", "a photo of the sea"])]
    clean = tiny("a photo of a cat", num_inference_steps=10, output_type="pt",
                 generator=torch.Generator().manual_seed(0)).images[0].float().clamp(0, 1)
    found = gs.identify(marked, keys)
    assert [r.extra["key_index"] for r in found] == [3, 3] and all(r.p_value < 1e-6 for r in found)
    assert all(r.bit_accuracy > 0.8 for r in found)
    jpeg = parse_attack("jpeg:50")
    assert all(r.p_value < 1e-6 for r in gs.detect([jpeg(m[None])[0] for m in marked], keys[3]))
    assert gs.detect([clean], keys[3])[0].p_value > 1e-3


def test_keygen_treats_it_as_a_score_scheme(tmp_path, capsys):
    """It has num_bits, yet its p-value does not depend on the message: no bit screening
    (which would say the key 'was not screened'), and a shipped-calibration lookup as a score scheme."""
    from wmkit.cli import main

    assert main(["keygen", "-m", "gaussian_shading", "-o", str(tmp_path / "k.json")]) == 0
    out = capsys.readouterr()
    assert "screened" not in out.out + out.err
    assert wmkit.create("gaussian_shading", pipeline="tiny").null_model is None


def test_generations_at_another_size_are_read_at_their_own_size_and_counted_twice():
    """A 512 px generation of the 256 px tiny pipeline carries a 64 x 64 noise: resized to
    256 before inversion it read nothing (p = 1.0 measured); it is read at its own size too,
    and the better of the two readings pays a factor 2. Images at the pipeline's size, or at
    a size no pipeline generates, are read once, as before. (PRC shares the mechanism.)"""
    from wmkit.diffusion import load_pipeline
    from wmkit.watermarkers.prc import PRC

    assert PRC.reads_value_by_value
    tiny = load_pipeline("tiny")
    gs = wmkit.create("gaussian_shading", pipeline=tiny, search=False)
    key = generate_key("gaussian_shading", seed=41)
    with wmkit.wrap(tiny, gs, key) as marked_pipe:
        big = marked_pipe("a photo of a cat", num_inference_steps=10, height=512, width=512, output_type="pt",
                          generator=torch.Generator().manual_seed(3)).images[0].float().clamp(0, 1)
    plain = tiny("a photo of a cat", num_inference_steps=10, output_type="pt",
                 generator=torch.Generator().manual_seed(3)).images[0].float().clamp(0, 1)
    found = gs.detect([plain, big, plain[:, :250, :250]], key)
    assert found[1].p_value < 1e-6 and found[1].extra["read_at_own_size"] == 1.0
    assert found[0].p_value > 1e-3 and "read_at_own_size" not in found[0].extra
    assert "read_at_own_size" not in found[2].extra
    # each reading alone: the pipeline-size one reads nothing, the reported p is twice the other
    resized = gs._detect([big], key)[0]
    gs._at_own_size = True
    own = gs._detect([big], key)[0]
    gs._at_own_size = False
    assert resized.p_value > 1e-3
    assert found[1].extra["log10_p_value"] == pytest.approx(own.extra["log10_p_value"] + np.log10(2))
