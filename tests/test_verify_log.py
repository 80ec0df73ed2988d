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
