"""Faults and misuse: atomic and exclusive writes, name collisions, outputs checked before any
work, symbolic links, key file modes, bad option values."""
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from wmkit.atomic import TargetExists, UnsafeTarget, write_bytes
from wmkit.cli import main
from wmkit.imageio import save_image


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory, small_photos):
    root = tmp_path_factory.mktemp("hardening")
    for i, img in enumerate(small_photos[:2]):
        save_image(img, root / "in" / f"photo{i}.png")
    assert main(["keygen", "-m", "dwtdct", "--seed", "1", "-o", str(root / "key.json")]) == 0
    return root


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_write_killed_midway_leaves_nothing_under_the_final_name(tmp_path):
    """kill -9 while the bytes are being flushed: the final name never holds a partial file."""
    target = tmp_path / "out.png"
    script = textwrap.dedent(f"""
        import os, time, sys
        import wmkit.atomic as atomic
        real_fsync = os.fsync
        def slow_fsync(fd):
            sys.stdout.write("writing\\n"); sys.stdout.flush(); time.sleep(60)
        os.fsync = slow_fsync
        atomic.write_bytes({str(target)!r}, b"x" * 1_000_000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    # what is left is a hidden temporary file, which a rerun does not mistake for the output
    assert all(p.name.startswith(".out.png.") for p in tmp_path.iterdir())
    write_bytes(target, b"complete")
    assert target.read_bytes() == b"complete"


def test_concurrent_writers_to_one_name_exactly_one_wins(tmp_path):
    target = tmp_path / "shared.png"
    barrier = threading.Barrier(8)
    outcomes = []

    def writer(i):
        barrier.wait()
        try:
            write_bytes(target, f"writer {i}".encode() * 1000)
            outcomes.append(("won", i))
        except TargetExists:
            outcomes.append(("refused", i))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for what, i in outcomes if what == "won"]
    assert len(winners) == 1 and len(outcomes) == 8
    assert target.read_bytes() == f"writer {winners[0]}".encode() * 1000  # whole, not interleaved
    assert [p.name for p in tmp_path.iterdir()] == ["shared.png"]  # no temporary file left behind


def test_symbolic_links_are_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.png"
    link.symlink_to(victim)
    for overwrite in (False, True):
        with pytest.raises(UnsafeTarget, match="symbolic link"):
            write_bytes(link, b"data", overwrite=overwrite)
    assert victim.read_text() == "precious"


def test_two_inputs_with_one_name_are_refused_before_any_work(photos_dir, capsys, tmp_path, monkeypatch):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.png").write_bytes((photos_dir / "in" / "photo0.png").read_bytes())
    _no_marking(monkeypatch)
    for extra in ([], ["--overwrite"]):
        code, out, err = run(capsys, "embed", "-m", "dwtdct", "-k", photos_dir / "key.json", tmp_path / "x", tmp_path / "y",
                             "-o", tmp_path / "out", *extra)
        assert code == 2 and "would both be written to" in err and "nothing was written" in err
        assert not list((tmp_path / "out").glob("*.png"))


def _no_marking(monkeypatch):
    """Make marking fail the test: what these runs refuse must be refused before any work."""
    import wmkit.cli as cli

    real_create = cli._create

    def create(method, **config):
        wm = real_create(method, **config)
        wm.embed = lambda *a, **k: pytest.fail("marked an image before refusing the run")
        return wm

    monkeypatch.setattr(cli, "_create", create)


def test_existing_outputs_and_links_are_refused_before_any_work(photos_dir, capsys, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo0.png").write_bytes(b"an earlier result")
    (out / "photo1.png").symlink_to(tmp_path / "elsewhere.png")
    _no_marking(monkeypatch)
    start = time.perf_counter()
    code, _, err = run(capsys, "embed", "-m", "dwtdct", "-k", photos_dir / "key.json", photos_dir / "in", "-o", out)
    assert code == 2 and "photo0.png: exists" in err and "symbolic link" in err
    assert time.perf_counter() - start < 10
    assert (out / "photo0.png").read_bytes() == b"an earlier result" and not (tmp_path / "elsewhere.png").exists()
    # --overwrite replaces a file but still never writes through a link
    code, _, err = run(capsys, "embed", "-m", "dwtdct", "-k", photos_dir / "key.json", photos_dir / "in", "-o", out,
                       "--overwrite")
    assert code == 2 and "symbolic link" in err and "photo0.png" not in err.replace("photo0.png: exists", "")


def test_output_folder_equal_to_the_input_folder_marks_each_input_once(photos_dir, capsys, tmp_path):
    from PIL import Image

    folder = tmp_path / "same"
    folder.mkdir()
    Image.open(photos_dir / "in" / "photo0.png").convert("RGB").save(folder / "j1.jpg", quality=95)
    before = (folder / "j1.jpg").read_bytes()
    code, out, err = run(capsys, "embed", "-m", "dwtdct", "-k", photos_dir / "key.json", folder, "-o", folder, "--overwrite")
    assert code == 0, err
    assert out.split() == [str(folder / "j1.png")]  # one output, the new file never read back as an input
    assert sorted(p.name for p in folder.iterdir()) == ["j1.jpg", "j1.png"]
    assert (folder / "j1.jpg").read_bytes() == before


def test_key_files_are_private_however_they_are_written(capsys, tmp_path):
    key = tmp_path / "k.json"
    key.write_text("{}")
    key.chmod(0o644)
    code, _, err = run(capsys, "keygen", "-m", "dwtdct", "--seed", "3", "-o", key, "--overwrite")
    assert code == 0, err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.json"
    assert run(capsys, "keygen", "-m", "dwtdct", "-o", fresh)[0] == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


@pytest.mark.parametrize("option", [["--max-pixels", "-5"], ["--max-pixels", "0"], ["--max-pixels", "many"]])
def test_bad_option_values_are_usage_errors(photos_dir, capsys, option):
    with pytest.raises(SystemExit) as exc:
        main(["verify", "-m", "dwtdct", "-k", str(photos_dir / "key.json"), str(photos_dir / "in"), *option])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--max-pixels" in err and ("positive integer" in err or "at least 1" in err)


def test_verify_prints_decoded_bits_only_on_request(photos_dir, capsys):
    import json

    base = ["verify", "-m", "dwtdct", "-k", photos_dir / "key.json", photos_dir / "in" / "photo0.png", "--json"]
    code, out, _ = run(capsys, *base)
    assert code == 0 and "bits" not in json.loads(out) and "bit_accuracy" in json.loads(out)
    code, out, _ = run(capsys, *base, "--show-bits")
    record = json.loads(out)
    assert code == 0 and len(record["bits"]) == 32 and set(record["bits"]) <= {"0", "1"}


def _tampered_key(path, tmp_path, name, **changes):
    """A copy of the key with fields changed and a valid checksum (what a careless edit or a
    hostile tool produces)."""
    import json

    from wmkit.keys import _checksum

    payload = json.loads(path.read_text())
    payload.pop("checksum")
    payload.update(changes)
    payload["checksum"] = _checksum(payload)
    out = tmp_path / name
    out.write_text(json.dumps(payload))
    return out


@pytest.mark.parametrize("changes, says", [
    ({"message": 12345}, "malformed"),
    ({"message": "0101"}, "carries exactly 32"),
    ({"message": "01x1" * 8}, "malformed"),
    ({"secret": "ab" * 1}, "the secret has 8 bits"),
    ({"method": "rivagan"}, "rivagan"),
])
def test_keys_with_a_valid_checksum_but_bad_contents_are_usage_errors(photos_dir, capsys, tmp_path, changes, says):
    key = _tampered_key(photos_dir / "key.json", tmp_path, "bad.json", **changes)
    code, out, err = run(capsys, "verify", "-m", "dwtdct", "-k", key, photos_dir / "in")
    assert code == 2 and says in err and str(key) in err and "Traceback" not in err


def test_broken_links_and_gifs_in_a_folder_get_records(photos_dir, capsys, tmp_path):
    import json

    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "photo0.png").write_bytes((photos_dir / "in" / "photo0.png").read_bytes())
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    Image.open(photos_dir / "in" / "photo1.png").convert("RGB").save(folder / "anim.gif")
    (folder / "notes.txt").write_text("not an image, left alone by the documented rule")
    code, out, _ = run(capsys, "verify", "-m", "dwtdct", "-k", photos_dir / "key.json", folder, "--json")
    records = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in out.splitlines()}
    assert code == 1 and set(records) == {"photo0.png", "gone.png", "anim.gif"}
    assert "broken symbolic link" in records["gone.png"]["error"]
    assert "p_value" in records["anim.gif"] and "p_value" in records["photo0.png"]


def test_an_output_that_appears_mid_run_is_refused_with_one_clear_line(photos_dir, capsys, tmp_path, monkeypatch):
    """Another process creates an output after the plan was checked: that file is not
    overwritten, the error names it once (not 'IN: OUT: exists'), the other input is written."""
    import wmkit.cli as cli

    out = tmp_path / "out"
    planned = cli._plan_outputs

    def plan_then_race(args, paths):
        targets = planned(args, paths)
        targets[0].parent.mkdir(parents=True, exist_ok=True)
        targets[0].write_bytes(b"someone else's")
        return targets

    monkeypatch.setattr(cli, "_plan_outputs", plan_then_race)
    code, stdout, err = run(capsys, "embed", "-m", "dwtdct", "-k", photos_dir / "key.json", photos_dir / "in", "-o", out)
    assert code == 1
    first = out / "photo0.png"
    assert first.read_bytes() == b"someone else's" and (out / "photo1.png").is_file()
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert line.startswith(f"error: {first}: exists") and line.count(str(first)) == 1
    assert str(photos_dir / "in" / "photo0.png") in line and "was not written" in line
