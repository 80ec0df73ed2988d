"""PRC watermark: the code, the marked noise's distribution, fresh randomness per image, the
Hoeffding p-value over keys and under other keys, power on noisy codewords, bad options."""
import numpy as np
import pytest
import torch
from scipy import stats as sps

import wmkit
from wmkit.errors import ConfigError
from wmkit.eval.metrics import binomial_upper_bound
from wmkit.keys import generate_key


def _prc(pipe, **options):
    return wmkit.create("prc", pipeline=pipe, calibration=None, **options)


def _satisfied(prc, latents, key):
    code = prc.code(key, latents[0].numel())
    bits = (latents.reshape(len(latents), -1) < 0).numpy().astype(np.uint8) ^ code.pad[None]
    return (bits[:, code.checks].sum(axis=2) % 2 == 0).mean(axis=1)


def test_codewords_satisfy_the_checks_and_the_noise_stays_standard_normal(pipe, noise):
    prc = _prc(pipe)
    key = generate_key("prc", seed=1)
    code = prc.code(key, 4096)
    assert code.generator.shape == (4096, 33) and code.checks.shape == (4030, 3)
    assert len(np.unique(code.checks[:, -1])) == 4030  # each check has a position of its own
    marked = prc.watermark_latents(noise[:50], key)
    assert torch.equal(marked.abs(), noise[:50].abs())
    # only the code's own noise (rate 0.021) breaks a check: about 1 - 3 x 0.021
    assert np.all(_satisfied(prc, marked, key) > 0.9)
    assert np.all(np.abs(_satisfied(prc, noise[:50], key) - 0.5) < 0.05)
    values = marked.reshape(-1).double().numpy()
    assert sps.kstest(values, "norm").pvalue > 1e-3 and abs((values < 0).mean() - 0.5) < 0.01
    per_position = (marked.reshape(50, -1) < 0).float().mean(0)
    assert abs(float(per_position.mean()) - 0.5) < 0.01
    # fresh randomness per image: two images' signs agree like coins; the same noise, the same signs
    assert abs(float(((marked[0] < 0) == (marked[1] < 0)).float().mean()) - 0.5) < 0.05
    assert torch.equal(prc.watermark_latents(noise[:2], key), marked[:2])


def test_p_value_holds_over_keys_for_a_fixed_latent_and_under_other_keys(pipe, noise):
    prc = _prc(pipe)
    y = torch.linspace(-1, 1, 32)
    fixed = (torch.sin(5 * y)[None, :, None] * torch.cos(2 * y)[None, None, :]).expand(4, -1, -1)[None]
    fixed = fixed + 0.5 * torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    p = np.array([np.exp(prc.analytic_log_p(fixed, generate_key("prc", seed=100 + s))[0][0]) for s in range(150)])
    marked = prc.watermark_latents(noise[:30], generate_key("prc", seed=1))
    others = np.concatenate([np.exp(prc.analytic_log_p(marked, generate_key("prc", seed=300 + s))[0]) for s in range(5)])
    for sample in (p, others):
        for alpha in (0.01, 0.05, 0.2):
            assert np.mean(sample < alpha) <= binomial_upper_bound(alpha, len(sample), confidence=0.999)


def test_noisy_codewords_are_detected(pipe, noise):
    prc = _prc(pipe)
    key = generate_key("prc", seed=4)
    marked = prc.watermark_latents(noise[:8], key)
    noisy = marked + 0.8 * torch.randn(marked.shape, generator=torch.Generator().manual_seed(1))  # about 0.78 of signs kept
    assert np.all(prc.analytic_log_p(noisy, key)[0] < np.log(1e-20))
    results = prc.results_from_signal(noisy, key)
    assert all(r.p_value < 1e-20 and r.extra["checks_satisfied"] > 0.55 for r in results)


def test_bad_options_are_refused(pipe):
    with pytest.raises(ConfigError, match="inversion_correlation"):
        _prc(pipe, inversion_correlation=1.0)
    with pytest.raises(ConfigError, match="too small"):
        _prc(pipe).watermark_latents(torch.randn(1, 1, 4, 4), generate_key("prc", seed=1))


def test_shipped_pipeline_generations_are_detected_and_clean_ones_not():
    """End to end on the shipped tiny pipeline, whose inversion keeps about 0.7 of the signs
    (measured on 4 generations: p from 3e-7 to 5e-28 at 25 generation steps, weaker at 10)."""
    from wmkit.diffusion import load_pipeline

    tiny = load_pipeline("tiny")
    prc = wmkit.create("prc", pipeline=tiny)
    key = generate_key("prc", seed=40)
    with wmkit.wrap(tiny, prc, key) as marked_pipe:
        marked = [marked_pipe(p, num_inference_steps=25, output_type="pt",
                              generator=torch.Generator().manual_seed(s)).images[0].float().clamp(0, 1)
                  for s, p in enumerate(["a photo of a cat", "a photo of the sea"])]
    clean = tiny("a photo of a cat", num_inference_steps=10, output_type="pt",
                 generator=torch.Generator().manual_seed(0)).images[0].float().clamp(0, 1)
    assert all(r.p_value < 1e-6 for r in prc.detect(marked, key))
    assert prc.detect([clean], key)[0].p_value > 1e-3
