"""The command-line contract: keygen / embed / verify / list, JSON fields, exit codes, bad inputs."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wmkit.cli import main
from wmkit.imageio import save_image

CONTRACT_FIELDS = {"path", "method", "p_value", "score", "detected", "bit_accuracy"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, small_photos):
    root = tmp_path_factory.mktemp("cli")
    for i, img in enumerate(small_photos[:2]):
        save_image(img, root / "in" / f"photo{i}.png")
    assert main(["keygen", "-m", "dwtdctsvd", "--seed", "1", "-o", str(root / "key.json")]) == 0
    return root


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_then_verify_json_contract(workspace, capsys):
    code, out, err = run(capsys, "embed", "-m", "dwtdctsvd", "-k", workspace / "key.json", workspace / "in", "-o", workspace / "out")
    assert code == 0, err
    assert sorted(p.name for p in (workspace / "out").iterdir()) == ["photo0.png", "photo1.png"]  # names kept
    code, out, err = run(capsys, "verify", "-m", "dwtdctsvd", "-k", workspace / "key.json", workspace / "out", workspace / "in", "--json", "--alpha", "0.001")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 4
    for record in records:
        assert CONTRACT_FIELDS <= set(record)
        assert record["method"] == "dwtdctsvd" and 0 <= record["p_value"] <= 1
        assert record["detected"] == (record["p_value"] < 0.001)
    marked = [r for r in records if "/out/" in r["path"]]
    clean = [r for r in records if "/in/" in r["path"]]
    assert all(r["detected"] for r in marked) and not any(r["detected"] for r in clean)


def test_bad_file_in_a_batch_is_reported_and_the_rest_processed(workspace, capsys, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    for name in ["photo0.png", "photo1.png"]:
        (batch / name).write_bytes((workspace / "in" / name).read_bytes())
    (batch / "broken.png").write_text("not an image")
    (batch / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(batch / "tiny.png")
    code, out, err = run(capsys, "verify", "-m", "dwtdctsvd", "-k", workspace / "key.json", batch, "--json")
    assert code == 1
    records = {json.loads(line)["path"].split("/")[-1]: json.loads(line) for line in out.splitlines()}
    assert set(records) == {"photo0.png", "photo1.png", "broken.png", "empty.jpg", "tiny.png"}
    assert "not an image" in records["broken.png"]["error"]
    assert "empty file" in records["empty.jpg"]["error"]
    assert "minimum of 65536 pixels" in records["tiny.png"]["error"]
    assert "p_value" in records["photo0.png"]
    code, out, err = run(capsys, "verify", "-m", "dwtdctsvd", "-k", workspace / "key.json", batch)
    assert code == 1 and err.count("error:") == 3 and "Traceback" not in err


def test_embed_refuses_to_overwrite(workspace, capsys):
    # writing into the input folder would replace the inputs: refused before any work, exit 2
    code, out, err = run(capsys, "embed", "-m", "dwtdctsvd", "-k", workspace / "key.json", workspace / "in", "-o", workspace / "in")
    assert code == 2 and err.count("is an input of this run") == 2 and "nothing was written" in err
    code, out, err = run(capsys, "embed", "-m", "dwtdctsvd", "-k", workspace / "key.json", workspace / "in", "-o", workspace / "out")
    assert code == 2 and "exists" in err  # outputs from the first test are kept


def test_usage_errors_exit_2(workspace, capsys, tmp_path):
    key = workspace / "key.json"
    assert run(capsys, "verify", "-m", "rivagan", "-k", key, workspace / "in")[0] == 2  # key for another method
    assert run(capsys, "verify", "-m", "nope", "-k", key, workspace / "in")[0] == 2
    assert run(capsys, "verify", "-m", "dwtdctsvd", "-k", tmp_path / "missing.json", workspace / "in")[0] == 2
    assert run(capsys, "verify", "-m", "dwtdctsvd", "-k", key, workspace / "in", "--alpha", "2")[0] == 2
    code, _, err = run(capsys, "keygen", "-m", "dwtdctsvd", "--message", "0101", "-o", tmp_path / "k.json")
    assert code == 2 and "exactly 32" in err
    assert run(capsys, "keygen", "-m", "dwtdctsvd", "-o", key)[0] == 2  # existing key not overwritten
    with pytest.raises(SystemExit) as exc:
        main(["verify"])
    assert exc.value.code == 2


def test_unwritable_output_folder(workspace, capsys, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, out, err = run(capsys, "embed", "-m", "dwtdctsvd", "-k", workspace / "key.json", workspace / "in" / "photo0.png", "-o", blocker)
    assert code == 2 and "not a folder" in err


def test_too_large_image_is_refused(workspace, capsys, tmp_path):
    Image.new("RGB", (3000, 3000)).save(tmp_path / "huge.png")
    code, out, err = run(capsys, "verify", "-m", "dwtdctsvd", "-k", workspace / "key.json", tmp_path / "huge.png", "--max-pixels", "1000000")
    assert code == 1 and "larger than the limit of 1000000 pixels" in err


def test_keygen_with_message_and_list(capsys, tmp_path):
    message = "01" * 16
    code, _, err = run(capsys, "keygen", "-m", "rivagan", "--message", message, "-o", tmp_path / "k.json", "--force")
    assert code == 0, err
    assert json.loads((tmp_path / "k.json").read_text())["message"] == message
    assert "secret" not in err and json.loads((tmp_path / "k.json").read_text())["secret"] not in err
    code, out, _ = run(capsys, "list")
    assert code == 0 and "rivagan" in out and "dwtdct" in out


def test_progress_bar_on_stderr(workspace, capsys):
    code, out, err = run(capsys, "verify", "-m", "dwtdctsvd", "-k", workspace / "key.json", workspace / "in", "--progress")
    # drawn (then cleared on close: a finished bar leaves the terminal to the results)
    assert code == 0 and "verify" in err and "/2 [" in err


def test_console_script_runs(workspace):
    proc = subprocess.run(
        [sys.executable, "-m", "wmkit.cli", "verify", "-m", "dwtdctsvd", "-k", str(workspace / "key.json"), str(workspace / "in"), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2


def test_attack_command(workspace, capsys, tmp_path):
    code, out, err = run(capsys, "attack", "-a", "jpeg:50", workspace / "in", "-o", tmp_path / "att")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "att").iterdir()) == ["photo0.png", "photo1.png"]
    from wmkit.imageio import load_image

    original = load_image(workspace / "in" / "photo0.png")
    attacked = load_image(tmp_path / "att" / "photo0.png")
    assert attacked.shape == original.shape and not np.array_equal(attacked.numpy(), original.numpy())
    code, out, _ = run(capsys, "attack", "--list")
    assert code == 0 and "jpeg" in out and "suites:" in out
    code, _, err = run(capsys, "attack", "-a", "jpeg:500", workspace / "in", "-o", tmp_path / "bad")
    assert code == 2 and "error:" in err
    code, _, err = run(capsys, "attack", "-a", "nonsense", workspace / "in", "-o", tmp_path / "bad")
    assert code == 2 and "unknown" in err


def test_demo_runs_end_to_end_on_a_subset(capsys, tmp_path):
    """`wmkit demo` (README's first command) on a post-hoc and a generation-time scheme, 2
    images: the table, the heatmap and demo.json; a folder that is not a demo's is refused."""
    import json

    out_dir = tmp_path / "demo"
    assert main(["demo", "--images", "2", "-m", "dwtdct", "-m", "tree_ring", "-o", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "dwtdct" in out and "tree_ring" in out and "jpeg" in out.lower() and "unmarked (FPR)" in out
    record = json.loads((out_dir / "demo.json").read_text())
    assert set(record["rows"]) == {"dwtdct", "tree_ring"} and record["rows"]["tree_ring"]["none"]["n"] == 2
    assert (out_dir / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out_dir / "dwtdct").iterdir()) == ["000.png", "001.png"]
    # a rerun refills its own folder; someone else's folder is refused before any work
    assert main(["demo", "--images", "2", "-m", "dwtdct", "-o", str(out_dir)]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["demo", "-m", "dwtdct", "-o", str(other)]) == 2
    assert "not an earlier demo" in capsys.readouterr().err and sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    assert main(["demo", "-m", "no_such_method"]) == 2


def test_demo_leaves_the_shared_pipeline_unwrapped():
    """The demo's generations restore a pipeline a scheme patched (Stable Signature's
    decoder), and the unmarked twins are made once for every scheme."""
    import torch

    import wmkit.demo as demo
    from wmkit.diffusion import random_pipeline

    pipe = random_pipeline(0)
    original = pipe.vae.decoder

    from wmkit.watermarkers.base import PipelineHook

    class DecoderToIdentity(PipelineHook):
        def patch(self, p):
            p.vae.decoder = torch.nn.Identity()
            return lambda: setattr(p.vae, "decoder", original)

    class Patching:
        name = "patching"

        def check_key(self, key):
            pass

        def pipeline_hook(self, key):
            return DecoderToIdentity(self, key)

    calls = []

    def fake_call(self, *a, **k):
        calls.append(self.vae.decoder)
        return type("O", (), {"images": torch.zeros(1, 3, 8, 8)})()

    generations = demo._Generations(1)
    generations.pipe = pipe
    original_call = type(pipe).__call__
    type(pipe).__call__ = fake_call
    try:
        generations.clean()
        generations.marked(Patching(), None)
        generations.clean()  # shared, not generated again
    finally:
        type(pipe).__call__ = original_call
    assert len(calls) == 2 and calls[0] is original and isinstance(calls[1], torch.nn.Identity)  # clean twin, then marked
    assert pipe.vae.decoder is original


def test_keygen_says_what_a_stable_signature_key_costs(tmp_path, capsys):
    assert main(["keygen", "-m", "stable_signature", "-o", str(tmp_path / "k.json")]) == 0
    err = capsys.readouterr().err
    assert "fine-tunes its VAE decoder" in err and "10 MB per key" in err
    assert main(["keygen", "-m", "dwtdct", "-o", str(tmp_path / "d.json")]) == 0
    assert "fine-tunes" not in capsys.readouterr().err


def test_plain_import_reaches_subpackages():
    """`import wmkit` then `wmkit.diffusion.load_pipeline` (README's snippet) works; a typo is an AttributeError."""
    import wmkit

    assert callable(wmkit.diffusion.load_pipeline) and callable(wmkit.data.crops)
    with pytest.raises(AttributeError):
        wmkit.no_such_thing


def test_verify_line_names_the_uncalibrated_test_by_its_kind(capsys):
    from wmkit.cli import _print_verify_line

    _print_verify_line({"path": "a.png", "detected": True, "p_value": 1e-9, "calibrated": True,
                        "p_value_analytic": 1e-10, "bit_accuracy": 0.97}, 1e-3)
    _print_verify_line({"path": "b.png", "detected": False, "p_value": 0.4, "calibrated": True,
                        "p_value_analytic": 0.3, "z": 0.2}, 1e-3)
    bit_line, score_line = capsys.readouterr().out.splitlines()
    assert "fair-coin p=1e-10" in bit_line and "analytic p=0.3" in score_line and "fair-coin" not in score_line


@pytest.mark.parametrize("method", ["tree_ring", "gaussian_shading", "prc"])
def test_initial_noise_schemes_generate_and_verify_with_a_local_pipeline_folder(method, pipe, tmp_path, capsys):
    from wmkit.keys import generate_key, save_key

    pipe.save_pretrained(tmp_path / "pipe")
    save_key(generate_key(method, seed=9), tmp_path / "k.json")
    code = main(["generate", "-m", method, "-k", str(tmp_path / "k.json"), "--prompt", "a cat", "-n", "2",
                 "--steps", "2", "-o", str(tmp_path / "out"), "--pipeline", str(tmp_path / "pipe")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png", "000001.png"]
    capsys.readouterr()
    code = main(["verify", "-m", method, "-k", str(tmp_path / "k.json"), str(tmp_path / "out"), "--json",
                 "--pipeline", str(tmp_path / "pipe"), "--inversion-steps", "2", "--calibration", "none"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(records) == 2 and {"path", "method", "p_value", "score", "detected"} <= set(records[0])
    code = main(["generate", "-m", method, "-k", str(tmp_path / "k.json"), "--prompt", "a cat", "-n", "1",
                 "-o", str(tmp_path / "out"), "--pipeline", str(tmp_path / "pipe")])
    assert code == 2  # would overwrite 000000.png
