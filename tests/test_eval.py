"""The evaluation harness, its summary, the report folder and the sharded (accelerate) run.

Kept small: dwtdct on 4 offline photos at 256 px with two attacks (jpeg:50, and resize:0.5,
which makes the images too small for the scheme and so exercises the "skipped" records)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from wmkit.cli import main
from wmkit.errors import ConfigError
from wmkit.eval.harness import ImageItem, attack_pair, make_attack_cases, make_schemes, run_harness, split_attack_list
from wmkit.eval.metrics import calibration_check, roc_curve
from wmkit.eval.records import TIMING_FIELDS, Record, read_records
from wmkit.eval.report import summarize, write_report
from wmkit.eval.run import merge_shards
from wmkit.imageio import save_image

EVAL_ARGS = ["-m", "dwtdct", "--attacks", "jpeg:50,resize:0.5", "--offline-photos", "4", "--size", "256", "--seed", "3", "--no-progress"]
ALPHAS = ["0.01", "0.001", "0.0001", "1e-06"]
RECORD_FIELDS = {
    "image_index", "image_id", "method", "attack", "attack_family", "strength", "watermarked", "status", "reason",
    "width", "height", "p_value", "p_value_analytic", "log10_p_value", "score", "bit_accuracy", "calibrated",
    "psnr", "ssim", "ms_ssim", "embed_psnr", "embed_ssim", "embed_ms_ssim", *TIMING_FIELDS,
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "report"
    assert main(["eval", *EVAL_ARGS, "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def records(report):
    return list(read_records(report / "results.jsonl"))


def test_records_have_the_fields(records, report):
    assert len(records) == 4 * 3 * 2  # images x (none + 2 attacks) x watermarked/not
    lines = (report / "results.jsonl").read_text().splitlines()
    assert all(set(json.loads(line)) == RECORD_FIELDS for line in lines)  # the file's schema, every field written
    for r in records:
        assert r.method == "dwtdct"
    by_status = {(r.attack, r.status) for r in records}
    assert by_status == {("none", "ok"), ("jpeg:50", "ok"), ("resize:0.5", "skipped")}
    for r in records:
        if r.status == "ok":
            assert 0.0 <= r.p_value <= 1.0 and 0.0 <= r.p_value_analytic <= 1.0
            assert 10 ** r.log10_p_value == pytest.approx(r.p_value, rel=1e-6)
            assert 0.0 <= r.bit_accuracy <= 1.0 and r.score == 32 * r.bit_accuracy
        else:  # too small after the attack: recorded with the reason, not dropped
            assert "smaller than the method's minimum" in r.reason and r.p_value is None
            assert (r.width, r.height) == (128, 128)
        if r.watermarked:
            assert r.embed_psnr > 30 and 0.9 < r.embed_ssim <= 1 and 0.9 < r.embed_ms_ssim <= 1
            assert r.time_embed_s > 0
        else:
            assert r.embed_psnr is None and r.time_embed_s is None
    clean = [r for r in records if r.attack == "none"]
    for r in clean:
        if r.watermarked:  # no attack: the image is the marked one
            assert r.psnr == r.embed_psnr
        else:  # the original itself: PSNR infinite (null), SSIM exactly 1
            assert r.psnr is None and r.ssim == 1.0
    jpeg = [r for r in records if r.attack == "jpeg:50"]
    assert all(r.psnr < 40 for r in jpeg) and all(r.strength == pytest.approx(5 / 9) for r in jpeg)
    assert [r.image_index for r in records] == sorted(r.image_index for r in records)


def _by_hand(records, method, attack):
    rows = [r for r in records if r.method == method and r.attack == attack and r.status == "ok"]
    pos = [r for r in rows if r.watermarked]
    neg = [r for r in rows if not r.watermarked]
    return pos, neg


def _auc_by_pairs(pos_scores, neg_scores):
    if not pos_scores or not neg_scores:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos_scores for n in neg_scores)
    return wins / (len(pos_scores) * len(neg_scores))


def test_summary_numbers_agree_with_the_records(report, records):
    summary = json.loads((report / "summary.json").read_text())
    assert [(row["method"], row["attack"]) for row in summary["results"]] == [("dwtdct", "none"), ("dwtdct", "jpeg:50"), ("dwtdct", "resize:0.5")]
    for row in summary["results"]:
        pos, neg = _by_hand(records, row["method"], row["attack"])
        assert row["n_watermarked"] == len(pos) and row["n_unwatermarked"] == len(neg)
        assert row["n_skipped"] == sum(1 for r in records if r.attack == row["attack"] and r.status == "skipped" and r.watermarked)
        for key in ALPHAS:
            alpha = float(key)
            if pos:
                assert row["tpr"][key] == sum(r.p_value < alpha for r in pos) / len(pos)
                assert row["tpr_analytic"][key] == sum(r.p_value_analytic < alpha for r in pos) / len(pos)
                fpr = sum(r.p_value < alpha for r in neg) / len(neg)
                bound = stats.binom.ppf(0.99, len(neg), alpha) / len(neg)
                assert row["fpr"][key] == fpr and row["fpr_bound"][key] == pytest.approx(bound)
                assert row["fpr_exceeded"][key] == (fpr > bound)
            else:
                assert row["tpr"][key] is None and row["fpr"][key] is None
        auc = _auc_by_pairs([-r.log10_p_value for r in pos], [-r.log10_p_value for r in neg])
        assert row["auc"] == (None if auc is None else pytest.approx(auc))
        if pos:
            assert row["bit_accuracy"] == pytest.approx(np.mean([r.bit_accuracy for r in pos]))
            assert row["psnr"] == pytest.approx(np.mean([r.psnr for r in pos]))
            assert row["ms_ssim"] == pytest.approx(np.mean([r.ms_ssim for r in pos]))
    clean_marked = [r for r in records if r.attack == "none" and r.watermarked]
    assert summary["methods"]["dwtdct"]["embed_psnr"] == pytest.approx(np.mean([r.embed_psnr for r in clean_marked]))
    assert summary["counts"] == {"records": 24, "images": 4, "failed_images": 0}


def test_roc_and_auc_on_a_synthetic_example():
    fpr, tpr, auc = roc_curve([3.0, 2.0, 1.0], [1.0, 0.0])
    # thresholds 3, 2, 1, 0: (0,0) start, then (0,1/3), (0,2/3), (1/2,1), (1,1)
    assert np.allclose(fpr, [0, 0, 0, 0.5, 1]) and np.allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    assert auc == pytest.approx(5.5 / 6)  # 5 wins and one tie (1 vs 1) out of 6 pairs
    assert roc_curve([5, 6], [1, 2])[2] == 1.0
    assert roc_curve([1, 2], [5, 6])[2] == 0.0
    assert roc_curve([1, 1], [1, 1])[2] == 0.5
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    assert roc_curve(pos, neg)[2] == pytest.approx(_auc_by_pairs(list(pos), list(neg)))


def _synthetic_records(neg_p, pos_p, attack="jpeg:50", strength=0.5, method="toy"):
    def record(i, p, watermarked):
        return Record(
            image_index=i, image_id=str(i), method=method, attack=attack, attack_family=attack.replace("@", ":").split(":")[0],
            strength=strength, watermarked=watermarked, status="ok", reason=None,
            p_value=p, p_value_analytic=p, log10_p_value=float(np.log10(p)), bit_accuracy=None, calibrated=False,
            psnr=30.0, ssim=0.9, ms_ssim=0.95, embed_psnr=40.0 if watermarked else None,
        )

    return [record(i, p, False) for i, p in enumerate(neg_p)] + [record(i, p, True) for i, p in enumerate(pos_p)]


def test_calibration_flag_fires_on_a_miscalibrated_example():
    rng = np.random.default_rng(1)
    honest = rng.uniform(size=2000)
    too_small = honest * 0.2  # claims five times the evidence it has: FPR ~ 5 alpha
    pos = rng.uniform(size=50) * 1e-8
    summary = summarize(_synthetic_records(too_small, pos) + _synthetic_records(honest, pos, attack="none", strength=0.0))
    rows = {row["attack"]: row for row in summary["results"]}
    assert rows["jpeg:50"]["fpr_exceeded"]["0.01"] and rows["jpeg:50"]["fpr_exceeded"]["0.001"]
    assert not any(rows["none"]["fpr_exceeded"].values())
    assert any("jpeg:50" in w and "alpha=0.01" in w for w in summary["calibration_warnings"])
    assert not any(w.startswith("toy / none") for w in summary["calibration_warnings"])
    check = calibration_check(too_small, [0.01])[0]
    assert check.exceeded and check.n == 2000 and check.fpr == pytest.approx(np.mean(too_small < 0.01))


def test_report_files_exist_and_pngs_are_valid(report):
    names = {p.name for p in report.iterdir()}
    assert {"results.jsonl", "summary.json", "summary.md", "heatmap.png", "roc_dwtdct.png", "quality_vs_robustness.png"} <= names
    assert not any(name.startswith("results.rank") for name in names)  # shards merged away
    md = (report / "summary.md").read_text()
    assert "| method | attack | strength | n | skipped | TPR@0.001 | AUC | bit acc | PSNR dB |" in md
    assert "| method | attack | n | FPR@0.01 | bound | FPR@0.001 | bound | status |" in md
    assert "| dwtdct | `jpeg:50` |" in md and "![roc_dwtdct](roc_dwtdct.png)" in md
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.size[0] >= 600 and im.size[1] >= 400


def test_strength_plot_for_graded_attacks(tmp_path):
    records = _synthetic_records([0.5, 0.9], [1e-9, 1e-2], attack="none", strength=0.0)
    for strength, p in [(0.25, 1e-9), (0.5, 1e-5), (1.0, 0.3)]:
        records += _synthetic_records([0.5, 0.9], [p, p], attack=f"jpeg@{strength}", strength=strength)
    (tmp_path / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in records))
    written = write_report(tmp_path, summarize(records), tmp_path / "results.jsonl")
    assert tmp_path / "tpr_vs_strength_toy.png" in written
    assert (tmp_path / "tpr_vs_strength_toy.png").read_bytes()[:4] == b"\x89PNG"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_accelerate_run_equals_the_single_process_run(tmp_path, records):
    pytest.importorskip("accelerate")
    out = tmp_path / "sharded"
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_DISABLE_RICH="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    # --multi_gpu only means "start N local processes" (torchrun); --cpu would start one
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
    ]
    proc = subprocess.run([*launch, "-m", "wmkit.cli", "eval", *EVAL_ARGS, "-o", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = list(read_records(out / "results.jsonl"))
    assert [r.without_timing() for r in sharded] == [r.without_timing() for r in records]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["processes"] == 2
    assert not list(out.glob("results.rank*"))


def test_merge_shards_restores_image_order(tmp_path):
    shards = [tmp_path / "results.rank0.jsonl", tmp_path / "results.rank1.jsonl"]
    shards[0].write_text("".join(json.dumps({"image_index": i, "row": j}) + "\n" for i in (0, 2, 4) for j in range(2)))
    shards[1].write_text("".join(json.dumps({"image_index": i, "row": j}) + "\n" for i in (1, 3) for j in range(2)))
    assert merge_shards(shards, tmp_path / "results.jsonl") == 10
    merged = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["image_index"], r["row"]) for r in merged] == [(i, j) for i in range(5) for j in range(2)]


def test_non_empty_report_dir_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["eval", "-m", "dwtdct", "--attacks", "none", "--offline-photos", "1", "--no-progress", "-o", str(out)]
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([*args, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # only an evaluation's own files are replaced
    assert len(list(read_records(out / "results.jsonl"))) == 2


def test_bad_images_in_a_folder_are_reported_and_the_rest_processed(tmp_path, small_photos, capsys):
    folder = tmp_path / "in"
    save_image(small_photos[0], folder / "good.png")
    (folder / "broken.png").write_text("not an image")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "tiny.png")
    out = tmp_path / "report"
    assert main(["eval", "-m", "dwtdct", "--attacks", "none", str(folder), "-o", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "broken.png" in err and "tiny.png" in err
    recs = list(read_records(out / "results.jsonl"))
    errors = [r for r in recs if r.status == "error"]
    assert sorted(Path(r.image_id).name for r in errors) == ["broken.png", "tiny.png"]
    assert {Path(r.image_id).name for r in recs if r.status == "ok"} == {"good.png"}
    assert json.loads((out / "summary.json").read_text())["counts"]["failed_images"] == 2


def test_same_seed_same_records_and_attacks_shared_by_marked_and_clean(small_photos):
    images = small_photos[:2]
    items = [ImageItem(index=i, image_id=f"img{i}", load=lambda im=im: im) for i, im in enumerate(images)]
    cases = make_attack_cases("gaussian_noise:0.05,random_crop:0.5")  # stochastic attacks

    def run(seed):
        import io

        out = io.StringIO()
        run_harness(items, make_schemes(["dwtdct"], seed=seed), cases, out, seed=seed)
        return [Record.from_dict(json.loads(line)).without_timing() for line in out.getvalue().splitlines()]

    first, again, other = run(5), run(5), run(6)
    assert first == again
    assert first != other
    # the same sampled parameters hit both copies: attacking an image paired with itself gives twins
    for case in cases[1:]:
        attacked, _ = attack_pair(case, images[0], images[0].clone(), seed=5, image_id="img0")
        assert torch.equal(attacked["marked"], attacked["clean"])
        assert not torch.equal(attacked["clean"], images[0])


def test_attack_lists_parse_suites_specs_and_options():
    assert split_attack_list("quick,center_crop:0.5,resize_back=false") == ["quick", "center_crop:0.5,resize_back=false"]
    cases = make_attack_cases(["jpeg:50,jpeg:50.0", "center_crop:0.5,resize_back=false"])
    assert [c.spec for c in cases] == ["none", "jpeg:50", "center_crop:0.5,resize_back=false"]  # duplicates dropped
    assert [c.spec for c in make_attack_cases("none")] == ["none"]
    assert len(make_attack_cases("strengths")) == 1 + 14 * 4 + 1
    with pytest.raises(ConfigError, match="attack suite"):
        make_attack_cases("nonsense")
    with pytest.raises(ConfigError, match="no attack before it"):
        split_attack_list("resize_back=false")


def test_ssim_matches_the_reference_and_ms_ssim_behaves(small_photos):
    from skimage.metrics import structural_similarity

    from wmkit.eval.metrics import ms_ssim, ssim

    image = small_photos[0]
    noisy = (image + 0.05 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    reference = structural_similarity(
        image.double().numpy(), noisy.double().numpy(), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0, channel_axis=0,
    )
    assert ssim(image, noisy) == pytest.approx(reference, abs=1e-9)
    assert ssim(image, image) == 1.0 and ms_ssim(image, image) == pytest.approx(1.0)
    noisier = (image + 0.2 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert 0 < ms_ssim(image, noisier) < ms_ssim(image, noisy) < 1
    assert np.isnan(ssim(image, image[:, :128])) and np.isnan(ms_ssim(image[:, :128, :128], image[:, :128, :128]))
