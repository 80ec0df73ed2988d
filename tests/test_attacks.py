"""Tests of the attack suite: a contract every registered attack must meet, plus specific checks."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from wmkit.attacks import SUITES, Attack, Sequential, get_suite, parse_attack
from wmkit.errors import ConfigError, InputError
from wmkit.registry import ATTACKS, list_attacks

NAMES = list_attacks()
_RANDOM_PIPELINES: list = []


def tiny_random_pipeline():
    """Pipeline attacks (generative ones) get a tiny random pipeline, built on first use only."""
    if not _RANDOM_PIPELINES:
        from wmkit.diffusion import random_pipeline

        _RANDOM_PIPELINES.append(random_pipeline(seed=0))
    return _RANDOM_PIPELINES[0]


# Pipeline attacks run diffusion steps: the generic checks use 2 of them (the contract
# does not depend on the count), which keeps this file fast on a CPU.
FAST_OPTIONS = {"steps": 2}


def _fast_options(cls) -> dict:
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in FAST_OPTIONS.items() if k in accepted} if cls.needs_pipeline else {}


def parse(spec: str) -> Attack:
    """parse_attack with a pipeline (and fast options) for the attacks that need one."""
    cls = ATTACKS.get(spec.split("@")[0].split(":")[0].split(",")[0].split("+")[0])
    extra = "".join(f",{k}={v}" for k, v in _fast_options(cls).items()) if "+" not in spec else ""
    return parse_attack(spec + extra, pipeline=tiny_random_pipeline)


def with_pipeline(cls) -> dict:
    """Constructor keywords a registered attack class needs for the generic checks."""
    return {"pipeline": tiny_random_pipeline, **_fast_options(cls)} if cls.needs_pipeline else {}
# Each attack at its default natural parameter and at full strength (the harshest setting).
SPECS = NAMES + [f"{name}@1" for name in NAMES]


def smooth_images(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Natural-ish test images: upsampled low-resolution noise (smooth, with some detail)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=generator)
    fine = 0.03 * torch.rand(batch, 3, size, size, generator=generator)
    images = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 0.97 + fine
    return images.clamp(0.0, 1.0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10.0 * math.log10(1.0 / float(F.mse_loss(a, b)))


# -- the contract, for every registered attack ---------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_replay_from_recorded_params(spec: str, images: torch.Tensor) -> None:
    attack = parse(spec)
    out, params = attack(images, generator=seeded(), return_params=True)
    assert torch.equal(attack.apply(images, params), out)


@pytest.mark.parametrize("spec", SPECS)
def test_batch_equals_singles(spec: str, images: torch.Tensor) -> None:
    attack = parse(spec)
    params = attack.sample_params(images, seeded())
    batched = attack.apply(images, params)
    for i in range(images.shape[0]):
        single = attack.apply(images[i : i + 1], {key: value[i : i + 1] for key, value in params.items()})
        torch.testing.assert_close(single, batched[i : i + 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_strength_zero_is_identity(name: str, images: torch.Tensor) -> None:
    cls = ATTACKS.get(name)
    attack = cls.from_strength(0.0, **with_pipeline(cls))
    assert attack.strength == 0.0
    assert torch.equal(attack(images, generator=seeded()), images)


@pytest.mark.parametrize("spec", SPECS)
def test_output_range_dtype_and_shape(spec: str, images: torch.Tensor) -> None:
    for dtype in (torch.float32, torch.float64):
        source = images.to(dtype)
        out = parse(spec)(source, generator=seeded())
        assert out.dtype == dtype and out.device == source.device
        assert out.shape[:2] == source.shape[:2]
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("spec", SPECS)
def test_same_seed_same_output(spec: str, images: torch.Tensor) -> None:
    attack = parse(spec)
    assert torch.equal(attack(images, generator=seeded(3)), attack(images, generator=seeded(3)))
    if attack.stochastic:
        assert not torch.equal(attack(images, generator=seeded(3)), attack(images, generator=seeded(4)))


@pytest.mark.parametrize("name", NAMES)
def test_bad_values_rejected_at_construction(name: str) -> None:
    cls = ATTACKS.get(name)
    for strength in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ConfigError, match=r"\[0, 1\]"):
            cls.from_strength(strength)
    if cls.param is None:
        pytest.skip(f"{name} has no natural parameter")
    invalid = cls.invalid_value()
    with pytest.raises(ConfigError, match=cls.param.name) as info:
        cls(**{cls.param.name: invalid})
    assert cls.param.range_text() in str(info.value)  # the message states the allowed range
    with pytest.raises(ConfigError):
        parse(f"{name}:{invalid}")
    with pytest.raises(ConfigError):
        cls(**{cls.param.name: "strong"})


@pytest.mark.parametrize("name", NAMES)
def test_constructor_default_matches_declared_default(name: str) -> None:
    cls = ATTACKS.get(name)
    if cls.param is None:
        pytest.skip(f"{name} has no natural parameter")
    signature = inspect.signature(cls.__init__)
    assert signature.parameters[cls.param.name].default == cls.param.default
    assert signature.parameters[cls.param.name].kind is inspect.Parameter.KEYWORD_ONLY
    for option, default in cls.options.items():
        assert signature.parameters[option].default == default


WITH_OPTIONS = ["center_crop:0.5,resize_back=false", "random_crop@0.5,resize_back=false", "center_crop:0.5,resize_back=true"]


@pytest.mark.parametrize(
    "spec", SPECS + [f"{name}@0" for name in NAMES] + [f"{name}@0.3" for name in NAMES] + WITH_OPTIONS
)
def test_parse_roundtrips_describe(spec: str, images: torch.Tensor) -> None:
    attack = parse(spec)
    again = parse(attack.describe())
    assert again.describe() == attack.describe()
    assert type(again) is type(attack)
    assert torch.equal(again(images, generator=seeded()), attack(images, generator=seeded()))


@pytest.mark.parametrize("name", NAMES)
def test_strength_maps_monotonically_onto_the_natural_parameter(name: str) -> None:
    cls = ATTACKS.get(name)
    if cls.param is None:
        pytest.skip(f"{name} has no natural parameter")
    values = [float(cls.from_strength(s).value) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    steps = [b - a for a, b in zip(values, values[1:])]
    assert all(step >= 0 for step in steps) or all(step <= 0 for step in steps)
    assert values[0] != values[-1]
    full = cls.from_strength(1.0)
    assert cls(**{cls.param.name: full.value}).strength == pytest.approx(1.0)


@pytest.mark.parametrize("name", [name for name in NAMES if ATTACKS.get(name).differentiable])
def test_differentiable_attacks_pass_gradients(name: str, images: torch.Tensor) -> None:
    source = images.clone().requires_grad_(True)
    ATTACKS.get(name).from_strength(0.5, **with_pipeline(ATTACKS.get(name)))(source, generator=seeded()).sum().backward()
    assert source.grad is not None and torch.isfinite(source.grad).all()
    assert float(source.grad.abs().sum()) > 0


# -- specific behaviour ----------------------------------------------------------------------


def test_jpeg_quality_10_destroys_much_more_than_95(images: torch.Tensor) -> None:
    low, high = psnr(parse_attack("jpeg:10")(images), images), psnr(parse_attack("jpeg:95")(images), images)
    assert high > 33.0
    assert high - low > 8.0


def test_jpeg_is_the_real_codec_and_deterministic(images: torch.Tensor) -> None:
    out = parse_attack("jpeg:50")(images)
    assert torch.equal(out * 255, (out * 255).round())  # decoded 8-bit values
    assert not torch.equal(parse_attack("jpeg:100")(images), images)  # jpeg:100 still encodes...
    assert torch.equal(parse_attack("jpeg@0")(images), images)  # ...but strength 0 is off


def test_differentiable_jpeg_is_close_to_the_real_codec(images: torch.Tensor) -> None:
    real, surrogate = parse_attack("jpeg:50")(images), parse_attack("jpeg_diff:50")(images)
    assert psnr(surrogate, real) > psnr(real, images) - 3.0  # nearer to real JPEG than JPEG to the input
    assert psnr(surrogate, images) < 45.0


def test_webp_quality_orders_damage(images: torch.Tensor) -> None:
    assert psnr(parse_attack("webp:10")(images), images) < psnr(parse_attack("webp:90")(images), images)


def test_center_crop_keeps_half_the_area(images: torch.Tensor) -> None:
    cropped = parse_attack("center_crop:0.5,resize_back=false")(images)
    height, width = cropped.shape[-2:]
    assert height * width / (64 * 64) == pytest.approx(0.5, abs=0.02)
    top, left = (64 - height + 1) // 2, (64 - width + 1) // 2
    assert torch.equal(cropped, images[:, :, top : top + height, left : left + width])
    resized = parse_attack("center_crop:0.5")(images)
    assert resized.shape == images.shape


def test_random_crop_takes_windows_at_random_positions(images: torch.Tensor) -> None:
    crop = parse_attack("random_crop:0.25,resize_back=false")
    windows = images[:1].unfold(2, 32, 1).unfold(3, 32, 1)  # every 32x32 window
    positions = set()
    for seed in range(6):
        out = crop(images[:1], generator=seeded(seed))
        assert out.shape[-2:] == (32, 32)
        matches = ((windows - out[0, :, None, None]).abs().amax(dim=(1, 4, 5)) == 0)[0].nonzero()
        assert len(matches) == 1  # exactly one window of the input, copied unchanged
        positions.add(tuple(matches[0].tolist()))
    assert len({top for top, _ in positions}) > 2 and len({left for _, left in positions}) > 2


def test_resize_keeps_the_new_size(images: torch.Tensor) -> None:
    assert parse_attack("resize:0.5")(images).shape[-2:] == (32, 32)
    assert parse_attack("resize:1.5")(images).shape[-2:] == (96, 96)


def test_rotate_90_matches_rot90_in_the_interior(images: torch.Tensor) -> None:
    rotated = parse_attack("rotate:90")(images)
    expected = torch.rot90(images, k=1, dims=(-2, -1))  # counter-clockwise, as displayed
    torch.testing.assert_close(rotated[..., 8:-8, 8:-8], expected[..., 8:-8, 8:-8], atol=1e-4, rtol=0)


def test_hflip_mirrors(images: torch.Tensor) -> None:
    assert torch.equal(parse_attack("hflip")(images), images.flip(-1))


def test_brightness_raises_the_mean(images: torch.Tensor) -> None:
    brighter = parse_attack("brightness:1.5")(images)
    assert float(brighter.mean()) > float(images.mean()) * 1.2
    assert float(parse_attack("brightness:0.5")(images).mean()) < float(images.mean())


def test_contrast_and_saturation_spread_values(images: torch.Tensor) -> None:
    assert float(parse_attack("contrast:1.5")(images).std()) > float(images.std())
    grey = parse_attack("saturation:0")(images)
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-6)


def test_blur_smooths_and_sharpness_roughens(images: torch.Tensor) -> None:
    def roughness(x: torch.Tensor) -> float:  # mean |second difference|: high frequencies only
        return float((x[..., 2:] - 2 * x[..., 1:-1] + x[..., :-2]).abs().mean())

    assert roughness(parse_attack("gaussian_blur:2")(images)) < 0.3 * roughness(images)
    assert roughness(parse_attack("sharpness:3")(images)) > roughness(images)


def test_gaussian_blur_matches_scipy(images: torch.Tensor) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    blurred = parse_attack("gaussian_blur:2")(images)
    # Kornia's "reflect" border is scipy's "mirror"; both cut the kernel at 3 sigma here.
    expected = ndimage.gaussian_filter(images.numpy(), sigma=(0, 0, 2, 2), mode="mirror", truncate=3.0)
    torch.testing.assert_close(blurred, torch.from_numpy(expected), atol=1e-5, rtol=0)


def test_gaussian_noise_has_the_requested_std() -> None:
    grey = torch.full((2, 3, 64, 64), 0.5)
    noisy = parse_attack("gaussian_noise:0.05")(grey, generator=seeded())
    assert float((noisy - grey).std()) == pytest.approx(0.05, rel=0.05)
    assert not torch.equal(noisy[0], noisy[1])  # each image gets its own field


def test_hue_shift_is_undone_by_the_opposite_shift(images: torch.Tensor) -> None:
    there = parse_attack("hue:60")(images)
    back = parse_attack("hue:-60")(there)
    assert psnr(there, images) < 35.0
    assert psnr(back, images) > 35.0


def test_perspective_distorts_more_when_stronger(images: torch.Tensor) -> None:
    weak = psnr(parse_attack("perspective:0.1")(images, generator=seeded()), images)
    strong = psnr(parse_attack("perspective:0.6")(images, generator=seeded()), images)
    assert strong < weak


def test_params_can_differ_per_image(images: torch.Tensor) -> None:
    attack = parse_attack("rotate:10")
    params = attack.sample_params(images)
    params["degrees"] = torch.tensor([0.0, 90.0])
    out = attack.apply(images, params)
    assert torch.equal(out[0], images[0])
    assert not torch.equal(out[1], images[1])


# -- specs, sequences and suites -----------------------------------------------------------


def test_spec_forms() -> None:
    assert parse_attack("jpeg").describe() == "jpeg:75"
    assert parse_attack("jpeg:50").quality == 50
    assert parse_attack("rotate@0.5").degrees == pytest.approx(22.5)
    crop = parse_attack(" center_crop : 0.5 , resize_back = false ")
    assert crop.resize_back is False and crop.describe() == "center_crop:0.5,resize_back=false"
    assert parse_attack("center_crop:0.5,resize_back=true").describe() == "center_crop:0.5"  # defaults omitted
    assert ATTACKS.create("jpeg", quality=30).describe() == "jpeg:30"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("jpg:50", "available: .*jpeg"),
        ("", "empty"),
        ("jpeg:50+", "empty step"),
        ("jpeg@2", r"\[0, 1\]"),
        ("jpeg:fifty", r"\[1, 100\]"),
        ("jpeg:50.5", "integer"),
        ("jpeg:50,resize_back=true", "options are none"),
        ("center_crop:0.5,resize_back=maybe", "true or false"),
        ("identity:3", "no parameter"),
        ("rotate:45:3", "degrees"),
    ],
)
def test_bad_specs_raise_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_attack(spec)


def test_bad_images_raise_input_errors() -> None:
    with pytest.raises(InputError):
        parse_attack("jpeg")(torch.zeros(3, 64, 64))
    with pytest.raises(InputError):
        parse_attack("jpeg")(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(InputError, match="3 channels"):
        parse_attack("hue")(torch.zeros(1, 4, 8, 8))


def test_apply_rejects_mismatched_params(images: torch.Tensor) -> None:
    attack = parse_attack("jpeg:50")
    with pytest.raises(ConfigError, match="off"):
        attack.apply(images, {"quality": torch.full((2,), 50.0)})
    with pytest.raises(ConfigError, match="first dimension 2"):
        attack.apply(images, attack.sample_params(images[:1]))


def test_sequence_applies_steps_in_order(images: torch.Tensor) -> None:
    chain = parse_attack("center_crop:0.5+jpeg:80")
    assert isinstance(chain, Sequential) and chain.describe() == "center_crop:0.5+jpeg:80"
    expected = parse_attack("jpeg:80")(parse_attack("center_crop:0.5")(images))
    out, params = chain(images, generator=seeded(), return_params=True)
    assert torch.equal(out, expected)
    assert torch.equal(chain.apply(images, params), out)
    assert set(params) == {"0.area", "1.quality", "1.off"}
    assert not chain.differentiable and not chain.stochastic


def test_sequence_of_random_steps_replays(images: torch.Tensor) -> None:
    chain = parse_attack("random_crop:0.5,resize_back=false+gaussian_noise@0.5+resize:2")
    out, params = chain(images, generator=seeded(), return_params=True)
    assert out.shape[-2:] == (90, 90) and chain.stochastic
    assert torch.equal(chain.apply(images, params), out)
    assert parse_attack(chain.describe()).describe() == chain.describe()


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suites_build(suite: str) -> None:
    attacks = get_suite(suite, pipeline=tiny_random_pipeline)
    assert bool(attacks) == (suite != "none")
    assert all(isinstance(attack, Attack) for attack in attacks)
    assert len({attack.describe() for attack in attacks}) == len(attacks)  # no duplicates


def test_standard_suite_covers_every_classical_attack() -> None:
    covered = {attack.name for attack in get_suite("standard")}
    classical = {name for name in NAMES if not ATTACKS.get(name).needs_pipeline}
    assert covered == classical - {"identity", "jpeg_diff"}
    strengths = get_suite("strengths")
    assert {attack.name for attack in strengths} == covered


def test_suites_the_rest_of_wmkit_relies_on() -> None:
    assert SUITES["none"] == []  # "clean images only"
    assert {attack.name for attack in get_suite("calibration")} >= {"jpeg", "resize", "brightness", "gaussian_blur"}
    assert all(attack.strength > 0 for attack in get_suite("quick"))


def test_unknown_suite() -> None:
    with pytest.raises(ConfigError, match="standard"):
        get_suite("everything")
