"""Generative and adversarial attacks (regen, rinse, vae_regen, paraphrase, adv_embed), the averaging
forgery, and `wmkit eval` / `wmkit attack` with a pipeline attack.

Everything runs on tiny random pipelines and models built from configs (no files, no network);
the generic attack contract for these attacks lives in tests/test_attacks.py. One check uses the
shipped weights/tiny-ldm when it is present.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from wmkit.attacks import FixedPrompt, get_suite, parse_attack
from wmkit.attacks.adversarial import pgd_embedding, vae_embedding
from wmkit.attacks.paraphrase import TransformersCaptioner
from wmkit.attacks.regeneration import regenerate_latents
from wmkit.diffusion import tiny_path
from wmkit.errors import ConfigError, WeightsError


def smooth(batch: int = 2, size: int = 48, seed: int = 0, width: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 6, 6, generator=generator)
    return F.interpolate(coarse, size=(size, width or size), mode="bilinear", align_corners=False).clamp(0, 1)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean())


# -- regeneration -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["regen", "rinse", "vae_regen", "paraphrase", "adv_embed"])
def test_odd_sizes_keep_size_and_strength_zero_is_identity(pipe, name):
    images = smooth(1, size=21, width=27)
    attack = parse_attack(f"{name}@0.5,steps=2" if name != "vae_regen" else f"{name}@0.5", pipeline=pipe)
    out = attack(images, generator=seeded())
    assert out.shape == images.shape and not torch.equal(out, images)
    assert torch.equal(parse_attack(f"{name}@0", pipeline=pipe)(images, generator=seeded()), images)


def test_regen_noise_grows_with_the_timestep(pipe):
    z0 = torch.randn(2, 4, 6, 6, generator=seeded())
    distances = [
        mse(regenerate_latents(pipe, z0, timestep=t, steps=2, generator=seeded(1)), z0) for t in (0.05, 0.2, 0.5, 0.9)
    ]
    assert all(a < b for a, b in zip(distances, distances[1:]))


def test_regen_strength_maps_to_the_timestep_and_replays(pipe):
    assert parse_attack("regen@0.5", pipeline=pipe).timestep == pytest.approx(0.3)
    assert parse_attack("rinse@1", pipeline=pipe).rounds == 4
    assert parse_attack("vae_regen@0.5", pipeline=pipe).rounds == 2
    images = smooth(2, size=16)
    attack = parse_attack("regen:0.4,steps=2", pipeline=pipe)
    out, params = attack(images, generator=seeded(), return_params=True)
    assert set(params) == {"timestep", "seed"}
    assert torch.equal(attack.apply(images, params), out)
    assert not torch.equal(out, attack(images, generator=seeded(1)))


@pytest.mark.skipif(not (tiny_path() / "model_index.json").is_file(), reason="weights/tiny-ldm not present")
def test_regen_on_the_shipped_pipeline_is_monotone(eval_photos_256):
    from wmkit.diffusion import load_pipeline

    images = F.interpolate(torch.stack(eval_photos_256[:2]), size=(64, 64), mode="bilinear", antialias=True)
    shipped = load_pipeline("tiny")
    errors = [mse(parse_attack(f"regen:{t},steps=4", pipeline=shipped)(images, generator=seeded()), images) for t in (0.0, 0.1, 0.5, 0.9)]
    assert errors[0] == 0.0 and all(a < b for a, b in zip(errors, errors[1:]))


def test_pipeline_strings_load_lazily_and_missing_weights_say_so(tmp_path):
    attack = parse_attack("regen:0.3", pipeline=str(tmp_path / "nowhere"))  # nothing loaded yet
    images = smooth(1)
    assert torch.equal(parse_attack("regen@0", pipeline=str(tmp_path / "nowhere"))(images), images)
    with pytest.raises(WeightsError, match="no diffusion pipeline"):
        attack(images, generator=seeded())
    with pytest.raises(ConfigError, match="needs a diffusion pipeline"):
        parse_attack("regen:0.3")


def test_generative_suite_builds(pipe):
    attacks = get_suite("generative", pipeline=pipe)
    assert {a.name for a in attacks} == {"regen", "rinse", "vae_regen", "paraphrase", "adv_embed"}
    assert all(a.needs_pipeline and 0 < a.strength <= 1 for a in attacks)
    assert len(attacks) == 15


# -- visual paraphrase -------------------------------------------------------------------------


class SpyCaptioner:
    def __init__(self, text: str) -> None:
        self.text, self.calls = text, []

    def __call__(self, images):
        self.calls.append(tuple(images.shape))
        return [self.text] * len(images)


def test_paraphrase_follows_the_prompt_or_captioner(pipe):
    images = smooth(1, size=32)
    cat = parse_attack("paraphrase:0.6,prompt=a cat,steps=3", pipeline=pipe)
    assert cat.describe() == "paraphrase:0.6,prompt=a cat,steps=3"
    out_cat = cat(images, generator=seeded())
    out_dog = parse_attack("paraphrase:0.6,prompt=a dog,steps=3", pipeline=pipe)(images, generator=seeded())
    assert out_cat.shape == images.shape and not torch.equal(out_cat, out_dog)
    spy = SpyCaptioner("a cat")
    from wmkit.attacks import VisualParaphrase

    via_captioner = VisualParaphrase(denoise=0.6, steps=3, captioner=spy, pipeline=pipe)(images, generator=seeded())
    assert spy.calls == [(1, 3, 32, 32)]
    torch.testing.assert_close(via_captioner, out_cat)  # the caption is used exactly like the prompt
    assert FixedPrompt("x")(images) == ["x"]
    with pytest.raises(ConfigError, match="not both"):
        VisualParaphrase(prompt="a cat", captioner=spy, pipeline=pipe)


@pytest.fixture(scope="module")
def tiny_blip_dir(tmp_path_factory):
    """A tiny BLIP captioner from configs, saved with its processor like a downloaded model."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    path = tmp_path_factory.mktemp("tiny-blip")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "dog", "on", "grass"]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=BertTokenizer(str(path / "vocab.txt"), bos_token="[CLS]"),
    )
    text = dict(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=64, bos_token_id=2, sep_token_id=3, pad_token_id=0, eos_token_id=3)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32)).eval()
    with torch.no_grad():  # make it say something: "cat" wins every step
        model.text_decoder.cls.predictions.bias[words.index("cat")] = 50.0
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_transformers_captioner_from_a_local_folder(pipe, tiny_blip_dir):
    captioner = TransformersCaptioner(tiny_blip_dir, max_new_tokens=4)
    captions = captioner(smooth(2, size=40))
    assert len(captions) == 2 and all(c.startswith("cat") for c in captions)
    attack = parse_attack(f"paraphrase:0.5,captioner={tiny_blip_dir},steps=2", pipeline=pipe)
    assert f"captioner={tiny_blip_dir}" in attack.describe()
    images = smooth(1, size=32)
    out = attack(images, generator=seeded())
    assert out.shape == images.shape and not torch.equal(out, images)
    with pytest.raises(WeightsError):
        TransformersCaptioner(tiny_blip_dir / "missing")
    with pytest.raises(WeightsError):
        TransformersCaptioner(tiny_blip_dir.parent)  # a folder that is not a model


# -- adversarial embedding ---------------------------------------------------------------------


def test_pgd_stays_in_budget_and_beats_random_noise(pipe):
    images = smooth(2, size=24)
    attack = parse_attack("adv_embed:8,steps=5", pipeline=pipe)
    out = attack(images, generator=seeded())
    eps = 8 / 255
    assert float((out - images).abs().max()) <= eps + 1e-6
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    encode = vae_embedding(pipe)
    with torch.no_grad():
        target = encode(images)
        noise = (images + eps * torch.sign(torch.randn(images.shape, generator=seeded(5)))).clamp(0, 1)
        adv_distance = float((encode(out) - target).norm())
        noise_distance = float((encode(noise) - target).norm())
    assert adv_distance > 1.5 * noise_distance
    assert not any(p.grad is not None for p in pipe.vae.parameters())  # the surrogate is left alone
    out64 = attack(images[:1].double(), generator=seeded())
    assert out64.dtype == torch.float64 and float((out64 - images[:1].double()).abs().max()) <= eps


def test_pgd_with_a_user_encoder():
    encoder = torch.nn.Conv2d(3, 4, 3, stride=2)
    images = smooth(1, size=20)
    from wmkit.attacks import AdversarialEmbedding

    out = AdversarialEmbedding(eps=4, steps=5, encoder=encoder, pipeline=None)(images, generator=seeded())
    assert float((out - images).abs().max()) <= 4 / 255 + 1e-6
    with torch.no_grad():
        assert float((encoder(out) - encoder(images)).norm()) > float((encoder(images.clamp(0, 1)) - encoder(images)).norm())
    adv = pgd_embedding(images, encoder, eps=4 / 255, steps=5, generator=seeded())
    with torch.no_grad():
        assert float((encoder(adv) - encoder(images)).norm()) > 0


# -- forgery -----------------------------------------------------------------------------------


def test_estimators_recover_a_fixed_pattern():
    from wmkit.eval.forgery import estimate_watermark, forge

    generator = seeded()
    clean = smooth(16, size=32, seed=1)
    pattern = 0.02 * torch.sign(torch.randn(3, 32, 32, generator=generator))
    marked = (clean + pattern).clamp(0, 1)
    paired = estimate_watermark(marked, clean=clean, estimator="paired")
    residual = estimate_watermark(marked, sigma=1.0)
    cosine = F.cosine_similarity(residual.flatten(), pattern.flatten(), dim=0)
    assert F.cosine_similarity(paired.flatten(), pattern.flatten(), dim=0) > 0.95
    assert cosine > 0.6
    assert forge(clean, paired).shape == clean.shape
    with pytest.raises(ConfigError):
        estimate_watermark(marked, estimator="paired")


def test_false_attribution_rate_of_a_fixed_pattern_scheme():
    """A toy scheme with a fixed additive pattern: the averaging forgery fools it completely."""
    from wmkit.eval.forgery import false_attribution

    pattern = 0.03 * torch.sign(torch.randn(3, 32, 32, generator=seeded(7)))

    class Toy:
        name = "toy"

        def detect(self, images, key):
            from types import SimpleNamespace

            from wmkit.eval.forgery import high_pass

            out = []
            for image in images:
                r = float(F.cosine_similarity(high_pass(image[None], 1.0).flatten(), pattern.flatten(), dim=0))
                out.append(SimpleNamespace(p_value=1e-6 if r > 0.3 else 0.5))
            return out

    clean = smooth(12, size=32, seed=2)
    marked = (clean + pattern).clamp(0, 1)
    test = smooth(6, size=32, seed=3)
    result = false_attribution(Toy(), None, marked, test, clean=clean, estimator="paired")
    assert result.false_attribution_rate == 1.0 and result.baseline_fpr == 0.0 and result.marked_tpr == 1.0
    assert result.forged_psnr is not None and result.forged_psnr > 25


def test_forgery_rate_on_a_peer():
    from wmkit.eval.forgery import forgery_rate

    result = forgery_rate("dwtdct", n_estimate=3, n_test=2, size=256, seed=0)
    assert 0.0 <= result.false_attribution_rate <= 1.0 and result.n_test == 2 and result.marked_tpr > 0.5
    assert result.as_dict()["method"] == "dwtdct"


# -- eval and cli ------------------------------------------------------------------------------


def test_eval_with_pipeline_attacks_reports_potency_and_time(pipe, tmp_path):
    from wmkit.eval.run import run_eval

    outcome = run_eval(
        methods=["dwtdct"], output=tmp_path / "report", attacks="regen@0.5,steps=2,vae_regen@0.25,jpeg:50",
        offline_photos=2, size=256, pipeline=pipe, progress=False, forgery=2,
    )
    summary = outcome.summary
    rows = {row["attack"]: row for row in summary["results"]}
    assert set(rows) == {"none", "regen:0.3,steps=2", "vae_regen:1", "jpeg:50"}
    assert rows["regen:0.3,steps=2"]["n_watermarked"] == 2 and rows["regen:0.3,steps=2"]["time_attack_s"] > 0
    assert rows["vae_regen:1"]["psnr"] is not None and rows["vae_regen:1"]["ssim"] is not None
    ranking = summary["potency"]["ranking"]["dwtdct"]
    assert {e["attack_family"] for e in ranking} == {"regen", "vae_regen", "jpeg"}
    # the random pipeline wrecks images: its attacks cannot count as removals at acceptable quality
    assert {e["verdict"] for e in ranking if e["attack_family"] != "jpeg"} <= {"destroys the image", "mark survives"}
    assert [e["estimator"] for e in summary["forgery"]] == ["residual", "paired"]
    markdown = (tmp_path / "report" / "summary.md").read_text()
    assert "Attack potency at matched quality" in markdown and "Forgery (averaging attack)" in markdown
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["config"]["pipeline"] == "StableDiffusionPipeline"


def test_cli_attack_and_eval_take_a_pipeline_folder(pipe, tmp_path, capsys):
    from wmkit.cli import main
    from wmkit.imageio import load_image, save_image

    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    image = smooth(1, size=40)[0]
    save_image(image, tmp_path / "in.png")
    assert main(["attack", "-a", "vae_regen:1", "--pipeline", str(folder), str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "-q"]) == 0
    attacked = load_image(tmp_path / "out" / "in.png")
    assert attacked.shape == image.shape and not torch.equal(attacked, image)
    code = main(["eval", "-m", "dwtdct", "--offline-photos", "1", "--attacks", "regen@0.25,steps=1", "--pipeline", str(folder),
                 "-o", str(tmp_path / "report")])
    assert code == 0
    assert main(["eval", "-m", "dwtdct", "--offline-photos", "1", "--attacks", "regen", "--pipeline", str(tmp_path / "none"),
                 "-o", str(tmp_path / "report2")]) != 0
    assert "no diffusion pipeline" in capsys.readouterr().err


def test_eval_covers_generation_time_schemes_on_generated_pairs(pipe, tmp_path):
    """Tree-Ring in `wmkit eval`: slot i is a pair of generations (same prompt and seed, with and
    without the mark); the unmarked twin is the negative and the quality reference."""
    from wmkit.eval.harness import GenerationPairs, derive_seed, make_schemes
    from wmkit.eval.records import read_records
    from wmkit.eval.run import run_eval

    scheme = make_schemes(["tree_ring"], seed=0, pipeline=pipe, prompts=["a cat", "a dog"], generation_steps=2)[0]
    assert isinstance(scheme.generation, GenerationPairs) and scheme.watermarker.pipe is pipe
    clean_a, marked_a = scheme.generation(scheme, 0, "slot-0", seed=0)
    clean_b, marked_b = scheme.generation(scheme, 0, "slot-0", seed=0)
    assert torch.equal(clean_a, clean_b) and torch.equal(marked_a, marked_b)  # seeded by the image id
    assert not torch.equal(clean_a, marked_a)  # the mark changes the generation
    # the twin is the plain pipeline's output (and the pipeline is left unwrapped)
    plain = pipe("a cat", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(derive_seed(0, "generate", "slot-0")))
    assert torch.equal(plain.images[0].float().clamp(0, 1), clean_a)

    outcome = run_eval(methods=["dwtdct", "tree_ring"], output=tmp_path / "report", attacks="jpeg:50",
                       offline_photos=2, size=256, pipeline=pipe, progress=False, generation_steps=2, forgery=2)
    records = list(read_records(tmp_path / "report" / "results.jsonl"))
    tree = [r for r in records if r.method == "tree_ring"]
    assert len(tree) == 2 * 2 * 2 and all(r.status == "ok" for r in tree)
    marked_none = [r for r in tree if r.watermarked and r.attack == "none"]
    assert all(r.embed_psnr is not None and r.p_value is not None for r in marked_none)
    # with no attack each image is its own reference: the mark's change shows in embed_psnr only
    assert all(r.psnr is None for r in tree if r.attack == "none")
    attacked = [r for r in tree if r.watermarked and r.attack != "none"]
    assert attacked and all(r.psnr is not None and r.ssim is not None for r in attacked)
    # the dwtdct rows still use the photos: their clean, unattacked row is the photo itself
    assert all(r.psnr is None for r in records if r.method == "dwtdct" and not r.watermarked and r.attack == "none")
    summary = outcome.summary
    assert summary["config"]["generated_images"]["tree_ring"]["prompts"] == ["a photo of coffee", "a photo of a cat", "a photo of a rocket",
                                                                               "a photo of the moon", "a photo of grass", "a photo of coins"]
    assert {row["method"] for row in summary["results"]} == {"dwtdct", "tree_ring"}
    assert {f["method"] for f in summary["forgery"]} == {"dwtdct"}  # the averaging forgery is post-hoc only
