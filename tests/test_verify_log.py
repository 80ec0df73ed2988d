"""`wmkit verify -o RESULTS.jsonl`: records appended as they are made, a killed run resumed to the
same file an uninterrupted run writes, runs never mixed; `--files-from` lists."""
import json

import pytest

from wmkit.cli import main
from wmkit.imageio import save_image


@pytest.fixture(scope="module")
def folder(tmp_path_factory, eval_photos_256):
    root = tmp_path_factory.mktemp("verify_log")
    for i, img in enumerate(eval_photos_256[:5]):
        save_image(img, root / "in" / f"photo{i}.png")
    (root / "in" / "broken.png").write_bytes(b"not an image")
    for method in ("dwtdct", "dwtdctsvd"):
        assert main(["keygen", "-m", method, "--seed", "1", "-o", str(root / f"{method}.key")]) == 0
    return root


def verify(folder, out, *extra, method="dwtdct"):
    return main(["verify", "-m", method, "-k", str(folder / f"{method}.key"), "-o", str(out), "--no-progress", *map(str, extra)])


def test_a_killed_run_resumes_to_the_file_an_uninterrupted_run_writes(folder, tmp_path, capsys):
    whole = tmp_path / "whole.jsonl"
    assert verify(folder, whole, folder / "in") == 1  # the broken file is an error record, the rest verified
    lines = whole.read_bytes().splitlines(keepends=True)
    header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    assert header == {"wmkit_verify": 1, "method": "dwtdct", "keys": [header["keys"][0]]}
    assert len(records) == 6 and sum("error" in r for r in records) == 1
    capsys.readouterr()

    # killed while writing its fourth record: three whole records and half a line
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:4]) + lines[4][:20])
    assert verify(folder, cut, folder / "in") == 0  # the error record was there already: skipped, not retried
    assert cut.read_bytes() == whole.read_bytes()
    assert "3 images were already there" in capsys.readouterr().err

    # a finished run run again adds nothing
    assert verify(folder, whole, folder / "in") == 0
    assert whole.read_bytes() == b"".join(lines)


def test_results_of_another_run_or_another_file_are_never_mixed(folder, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert verify(folder, out, folder / "in" / "photo0.png") == 0
    before = out.read_bytes()
    assert verify(folder, out, folder / "in" / "photo1.png", method="dwtdctsvd") == 2
    assert "another run" in capsys.readouterr().err and out.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert verify(folder, notes, folder / "in" / "photo0.png") == 2
    assert notes.read_text() == "my notes\n"
    assert verify(folder, tmp_path, folder / "in" / "photo0.png") == 2  # a folder


def test_files_from_a_list(folder, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'in' / 'photo2.png'}\n\n{folder / 'in' / 'photo3.png'}\n")
    out = tmp_path / "r.jsonl"
    assert verify(folder, out, "--files-from", listing) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert [r["path"] for r in records] == [str(folder / "in" / "photo2.png"), str(folder / "in" / "photo3.png")]
    assert verify(folder, tmp_path / "x.jsonl", "--files-from", tmp_path / "missing.txt") == 2
    assert main(["verify", "-m", "dwtdct", "-k", str(folder / "dwtdct.key")]) == 2  # nothing to verify


@pytest.mark.parametrize("method", ["dwtdct", "hidden"])
def test_workers_write_what_one_process_writes_in_the_same_order(folder, tmp_path, method, capsys):
    """Two worker processes (one torch thread each) against one process with one thread: the
    same file, byte for byte, error record included; a cut file resumed with workers too."""
    import torch

    assert main(["keygen", "-m", method, "--seed", "1", "-o", str(tmp_path / "k.key")]) == 0
    args = ["verify", "-m", method, "-k", str(tmp_path / "k.key"), str(folder / "in"), "--no-progress"]
    one, two, cut = tmp_path / "one.jsonl", tmp_path / "two.jsonl", tmp_path / "cut.jsonl"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args + ["-o", str(one)]) == 1
    finally:
        torch.set_num_threads(threads)
    assert main(args + ["-o", str(two), "--workers", "2"]) == 1
    assert two.read_bytes() == one.read_bytes() and len(one.read_bytes().splitlines()) == 7
    lines = one.read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(lines[:3]) + lines[3][:10])  # killed while writing its third record
    assert main(args + ["-o", str(cut), "--workers", "2"]) == 0  # the error record was kept: not retried
    assert cut.read_bytes() == one.read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(args + ["--workers", "0"])
    assert exit_.value.code == 2


def test_two_process_accelerate_verify_writes_the_single_process_file(folder, tmp_path):
    """`accelerate launch` with 2 processes: each verifies its share into a shard, the main
    process merges them in input order: the file one process writes, byte for byte; a rerun
    over a longer list resumes it (only the new images are verified)."""
    import os
    import socket
    import subprocess
    import sys

    pytest.importorskip("accelerate")
    single, sharded = tmp_path / "single.jsonl", tmp_path / "sharded.jsonl"
    assert verify(folder, single, folder / "in") == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_DISABLE_RICH="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    names = sorted(p.name for p in (folder / "in").iterdir())
    listing = tmp_path / "list.txt"

    def launched(count):
        listing.write_text("".join(f"{folder / 'in' / n}\n" for n in names[:count]))
        return subprocess.run([*launch, "-m", "wmkit.cli", "verify", "-m", "dwtdct", "-k", str(folder / "dwtdct.key"),
                               "--files-from", str(listing), "-o", str(sharded), "--no-progress"],
                              env=env, capture_output=True, text=True, timeout=300)

    proc = launched(3)  # broken.png and two photos
    assert proc.returncode == 1, proc.stderr[-3000:]  # the broken file
    assert sharded.read_bytes().splitlines() == single.read_bytes().splitlines()[:4]
    proc = launched(len(names))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sharded.read_bytes() == single.read_bytes()
    assert not list(tmp_path.glob("sharded.jsonl.rank*"))
