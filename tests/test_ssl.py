"""SSL latent-space marks: backbones (tiny, DINO ResNet-50 layout), whitening, marking constraints, tests."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as sps

import wmkit
from wmkit.errors import WeightsError
from wmkit.keys import generate_key
from wmkit.models.backbone import ResNet50, TinyBackbone, WhitenedBackbone, load_dino_resnet50, load_whitened, save_whitened
from wmkit.watermarkers.ssl import perceptual_heatmap, project_psnr


@pytest.fixture(scope="module")
def whitening_images():
    from wmkit import data

    return torch.stack(data.crops(96, size=64, group="evaluation", seed=3))


@pytest.fixture(scope="module")
def random_backbone(whitening_images):
    torch.manual_seed(0)
    model = WhitenedBackbone(TinyBackbone(width=8, out_dim=32).eval(), 32)
    with torch.no_grad():
        model.fit_whitening(model.backbone(whitening_images))
    return model.eval()


def test_dino_resnet50_checkpoint_loads_strictly(tmp_path):
    state = {k: v for k, v in ResNet50().state_dict().items() if not k.startswith("normalize.")}
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision-style extra classifier: ignored
    torch.save(state, tmp_path / "dino.pth")
    model = load_dino_resnet50(tmp_path / "dino.pth")
    assert torch.equal(model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    del state["layer3.0.conv1.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="not a ResNet-50"):
        load_dino_resnet50(tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="no such checkpoint"):
        load_dino_resnet50(tmp_path / "missing.pth")


def test_whitening_and_save_load(random_backbone, whitening_images, eval_photos_256, tmp_path):
    with torch.no_grad():
        features = random_backbone(whitening_images)
    cov = torch.cov(features.T.double())
    dim = random_backbone.dim
    assert 8 <= dim <= 32 and features.shape[1] == dim
    assert torch.allclose(cov, torch.eye(dim, dtype=torch.float64), atol=1e-3)
    save_whitened(random_backbone, tmp_path / "bb")
    loaded = load_whitened(tmp_path / "bb")
    x = eval_photos_256[0][None]
    assert torch.allclose(loaded(x), random_backbone(x), atol=1e-3)
    with pytest.raises(WeightsError):
        load_whitened(tmp_path / "nothing")


def test_psnr_projection_and_heatmap():
    delta = torch.randn(2, 3, 32, 32)
    projected = project_psnr(delta, 42.0)
    mse = projected.pow(2).mean(dim=(1, 2, 3))
    assert torch.all(10 * torch.log10(1 / mse) >= 42.0 - 1e-4)
    small = 1e-4 * delta
    assert torch.equal(project_psnr(small, 42.0), small)  # already within budget: untouched
    flat_and_textured = torch.cat([torch.full((1, 3, 32, 16), 0.5), torch.rand(1, 3, 32, 16)], dim=3)
    heat = perceptual_heatmap(flat_and_textured)
    assert heat[..., 4:12].mean() < 0.3 * heat[..., 20:28].mean()  # the change goes where texture hides it


@pytest.mark.parametrize("method", ["ssl_zero_bit", "ssl_multi_bit"])
def test_marking_respects_psnr_and_moves_the_detector(method, random_backbone):
    from wmkit import data

    wm = wmkit.create(method, backbone=random_backbone, steps=40, target_psnr=38.0, calibration=None)
    key = generate_key(method, seed=1)
    images = data.crops(2, size=96, group="evaluation", seed=5)
    marked = wm.embed(images, key)
    for original, image in zip(images, marked):
        psnr = 10 * torch.log10(1 / (original - image).pow(2).mean())
        assert psnr >= 38.0
        assert torch.equal(image, image.mul(255).round().div(255))  # savable as 8-bit losslessly
    clean, detected = wm.detect(images, key), wm.detect(marked, key)
    for c, d in zip(clean, detected):
        assert d.p_value < c.p_value
        assert 0 <= d.p_value <= 1
    if method == "ssl_multi_bit":
        assert np.mean([d.bit_accuracy for d in detected]) >= 0.75


def test_hypercone_null_on_whitened_clean_features(random_backbone):
    from wmkit import data

    # fresh crops from the distribution the whitening was fitted on
    wm = wmkit.create("ssl_zero_bit", backbone=random_backbone, calibration=None)
    features = wm.extract(data.crops(40, size=64, group="evaluation", seed=4))
    p = [float(np.exp(wm.analytic_log_p(features[i:i + 1], generate_key("ssl_zero_bit", seed=s))[0][0]))
         for s in range(20) for i in range(len(features))]
    assert sps.kstest(p, "uniform").pvalue > 0.001


def test_dino_checkpoint_whitened_into_a_backbone_folder(tmp_path):
    from wmkit import data
    from wmkit.models.backbone import whiten_checkpoint

    state = {k: v for k, v in ResNet50().state_dict().items() if not k.startswith("normalize.")}
    torch.save(state, tmp_path / "dino.pth")
    images = data.crops(12, size=64, group="evaluation", seed=6)
    folder = whiten_checkpoint(tmp_path / "dino.pth", images, tmp_path / "bb")
    wm = wmkit.create("ssl_zero_bit", backbone=str(folder), calibration=None)
    assert wm.missing_default_model() is None
    features = wm.extract(images)
    assert features.shape == (12, wm.backbone.dim) and wm.backbone.dim <= 11  # 12 images: rank <= 11


def test_missing_default_backbone_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("WMKIT_WEIGHTS", str(tmp_path))  # a weights folder without the backbone
    wm = wmkit.create("ssl_zero_bit")
    assert "shipped SSL backbone is missing" in wm.missing_default_model()
    with pytest.raises(WeightsError, match="shipped SSL backbone is missing"):
        wm.embed([torch.rand(3, 64, 64)], generate_key("ssl_zero_bit", seed=1))


def test_zero_bit_marking_uses_the_dual_cone_side_the_feature_leans_to(random_backbone):
    """An image whose feature starts on the far side of u (half of all image/key pairs) is
    pushed further along -u, into the dual cone, not dragged across the sphere. (Regression:
    the one-sided cone loss had no gradient there at all, and those images stayed unmarked.)"""
    from wmkit import data

    wm = wmkit.create("ssl_zero_bit", backbone=random_backbone, steps=40, target_psnr=38.0, calibration=None)
    image = data.crops(1, size=96, group="evaluation", seed=5)
    features = wm.extract(image)
    key = next(k for k in (generate_key("ssl_zero_bit", seed=s) for s in range(50))
               if float(F.normalize(features, dim=1)[0] @ wm.direction(k)) < -0.1)
    marked = wm.embed(image, key)
    before, after = wm.detect(image, key)[0], wm.detect(marked, key)[0]
    assert before.score < -0.1 and after.score < -0.3, (before.score, after.score)
    assert after.p_value < 1e-3 < before.p_value


def test_hypercone_p_value_is_exact_over_keys_for_any_fixed_feature():
    """The key's direction is uniform on the sphere, so cos(f, u) follows the hypercone
    null for *any* fixed feature, isotropic or not: the FPR over keys is exact (dual cone too)."""
    wm = wmkit.create("ssl_zero_bit", backbone=WhitenedBackbone(TinyBackbone(width=4, out_dim=24), 24), calibration=None)
    feature = torch.linspace(-3, 9, 24)[None] ** 2  # far from isotropic: one large common direction
    p = np.array([float(np.exp(wm.analytic_log_p(feature, generate_key("ssl_zero_bit", seed=s))[0][0])) for s in range(2000)])
    assert sps.kstest(p, "uniform").pvalue > 0.001
    assert np.mean(p < 0.01) <= 0.02


def test_shipped_bit_calibration_is_not_used_for_another_backbone(random_backbone):
    wm = wmkit.create("ssl_multi_bit", backbone=random_backbone)  # calibration="auto"
    assert wm.config()["backbone"] == "WhitenedBackbone"
    assert wm.null_model is None  # no shipped calibration applies to a user's backbone


def test_backbone_recipe_runs_a_few_steps(tmp_path):
    from wmkit.train.ssl_backbone import train

    provenance = train(out=tmp_path / "bb", minutes=None, steps=2, width=4, dim=16, batch=4, size=48, count=8, fit_count=40)
    assert provenance["steps"] == 2 and provenance["objective"] == "vicreg"
    model = load_whitened(tmp_path / "bb")
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, model.dim) and 1 <= model.dim <= 16


def test_markability_term_rewards_features_a_small_perturbation_moves():
    from wmkit.train.ssl_backbone import markability

    torch.manual_seed(0)
    model = TinyBackbone(width=4, out_dim=16).train()
    views = torch.rand(6, 3, 48, 48)
    loss = markability(model, views, torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and loss.item() >= -4.0  # the move is capped at 4 sd
    loss.backward()  # it trains the backbone's weights, not the (detached) views
    assert all(p.grad is not None for p in model.features[0].parameters())


def test_working_resolution_view():
    from wmkit.watermarkers.ssl import WORKING_SIDE, to_working

    big = torch.rand(1, 3, 512, 768)
    assert tuple(to_working(big).shape) == (1, 3, WORKING_SIDE, 384)
    small = torch.rand(1, 3, 200, 300)
    assert to_working(small) is small  # never upscaled


def test_a_mark_on_a_large_photo_is_read_after_halving_its_size():
    """The perturbation is optimised at working resolution and the detector reads there, so a
    2x downscaled copy of a marked 512 px photo reads like the photo (it read nothing before)."""
    from wmkit import data
    from wmkit.attacks import parse_attack

    wm = wmkit.create("ssl_zero_bit", steps=60)
    key = generate_key("ssl_zero_bit", seed=3)
    photo = data.crops(1, size=512, group="evaluation", seed=21, min_scale=0.6)[0]
    marked = wm.embed([photo], key)[0]
    halved = parse_attack("resize:0.5")(marked[None])[0]
    clean, full, half = (float(r.score) for r in wm.detect([photo, marked, halved], key))
    assert abs(full) > abs(clean) + 0.2  # |cosine| with the key's direction went up
    assert abs(half - full) < 0.1 * abs(full)


def test_antialiased_backbone_moves_less_under_a_one_pixel_shift(whitening_images):
    """Blurred strides (``antialias=True``) are what lets a mark survive a shift, a crop or a
    rotation: a strided network's feature of an image shifted by one pixel differs from the
    image's own by a sizeable part of the difference between two images; with blurred strides
    by far less (random weights: the property is the architecture's)."""
    images = whitening_images[:6]

    def shift_ratio(antialias):
        torch.manual_seed(0)
        model = TinyBackbone(width=8, out_dim=32, antialias=antialias).eval()
        with torch.no_grad():
            own, shifted = model(images), model(torch.roll(images, (1, 1), (2, 3)))
        return float(((own - shifted).norm(dim=1) / (own - own.roll(1, 0)).norm(dim=1)).mean())

    assert shift_ratio(True) < 0.5 * shift_ratio(False)


@pytest.mark.parametrize("options", [{"antialias": True}, {"antialias": True, "standardize": True}])
def test_backbone_variants_save_and_load(tmp_path, whitening_images, options):
    torch.manual_seed(0)
    model = WhitenedBackbone(TinyBackbone(width=4, out_dim=16, **options).eval(), 16)
    with torch.no_grad():
        model.fit_whitening(model.backbone(whitening_images))
    save_whitened(model, tmp_path / "bb")
    loaded = load_whitened(tmp_path / "bb")
    assert {k: loaded.backbone.config.get(k) for k in options} == options
    x = whitening_images[:2]
    assert torch.allclose(loaded(x), model(x), atol=1e-4)


@pytest.mark.parametrize("options", [{}, {"antialias": True, "standardize": True}])
def test_inference_copy_folds_batch_norms_and_keeps_the_features(whitening_images, options):
    from wmkit.models.backbone import for_inference

    torch.manual_seed(0)
    model = TinyBackbone(width=8, out_dim=32, **options)
    with torch.no_grad():
        model.train()(whitening_images)  # batch-norm statistics that are not the identity
        model.eval()
        fast = for_inference(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
        reference = model(whitening_images[:4])
        assert torch.allclose(fast(whitening_images[:4]), reference, atol=1e-4 * float(reference.abs().max()))


def test_standardized_backbone_ignores_brightness_and_contrast(whitening_images):
    """Without clipping, a gain (brightness) or a blend with grey (contrast) changes next to
    nothing a ``standardize=True`` backbone computes; the same weights without it move."""
    # no pixel clips at either attack below, and no image is flat enough for Standardize's floor
    textured = whitening_images[whitening_images.std(dim=(1, 2, 3)).argsort(descending=True)[:4]]
    images = 0.1 + 0.6 * textured
    brighter, flatter = images * 1.4, images.mean(dim=(1, 2, 3), keepdim=True) * 0.3 + images * 0.7

    def moved(standardize):
        torch.manual_seed(0)  # Standardize has no parameters: the same weights either way
        # float64: a random network's features are small enough for float32 rounding to blur the comparison
        model = TinyBackbone(width=8, out_dim=32, standardize=standardize).eval().double()
        with torch.no_grad():
            own = model(images.double())
            return [float((model(other.double()) - own).norm(dim=1).max()) for other in (brighter, flatter)]

    for standardized, plain in zip(moved(True), moved(False)):
        assert plain > 0 and standardized < 1e-3 * plain


def test_backbone_recipe_starts_from_another_architectures_checkpoint(tmp_path):
    """``init``: a plain run's weights start a standardized run; provenance names the first run."""
    from wmkit.train.ssl_backbone import train

    options = dict(minutes=None, width=4, dim=16, batch=4, size=48, count=8, fit_count=40)
    train(out=tmp_path / "plain", steps=2, **options)
    provenance = train(out=tmp_path / "std", steps=1, standardize=True, init=tmp_path / "plain" / "checkpoint.pt",
                       **options)
    assert provenance["initialised_from"]["steps"] == 2 and "standardize" not in provenance["initialised_from"]["config"]
    assert load_whitened(tmp_path / "std").backbone.config["standardize"] is True
    with pytest.raises(SystemExit, match="does not fit"):
        train(out=tmp_path / "wide", steps=1, init=tmp_path / "plain" / "checkpoint.pt", **{**options, "width": 8})


def test_backbone_recipe_resumes_where_its_checkpoint_stopped(tmp_path):
    """A run stopped after 2 steps and resumed to 3 ends with the weights of a 3-step run."""
    from wmkit.train.ssl_backbone import train

    options = dict(minutes=None, width=4, dim=16, batch=4, size=48, count=8, fit_count=40)
    train(out=tmp_path / "straight", steps=3, **options)
    train(out=tmp_path / "split", steps=2, **options)
    provenance = train(out=tmp_path / "split", steps=3, resume=True, **options)
    assert provenance["steps"] == 3
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(load_whitened(tmp_path / "split")(x), load_whitened(tmp_path / "straight")(x), atol=1e-4)
    with pytest.raises(SystemExit, match="no checkpoint"):
        train(out=tmp_path / "nothing", steps=1, resume=True, **options)
