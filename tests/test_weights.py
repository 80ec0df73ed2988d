"""What ships in weights/ is what its checksums (and weights/README.md) describe."""
import hashlib
from pathlib import Path

import pytest

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
SUMS = sorted(WEIGHTS.rglob("sha256sums.txt"))


def _entries():
    for sums in SUMS:
        for line in sums.read_text().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                yield sums.parent, digest, name.strip()


ENTRIES = list(_entries())


@pytest.mark.parametrize("folder,digest,name", ENTRIES, ids=[f"{folder.name}/{name}" for folder, _, name in ENTRIES])
def test_shipped_file_matches_its_checksum(folder, digest, name):
    path = folder / name
    assert path.is_file(), f"{path} is listed in sha256sums.txt but missing"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} changed without updating sha256sums.txt"


def test_every_shipped_weight_file_has_a_checksum():
    listed = {(folder / name).resolve() for folder, _, name in ENTRIES}
    shipped = {p.resolve() for p in WEIGHTS.rglob("*") if p.suffix in {".safetensors", ".json", ".onnx", ".pt"} and p.name != "provenance.json"
               and "config" not in p.name and "tokenizer" not in p.name and "vocab" not in p.name and "special_tokens" not in p.name
               and "model_index" not in p.name and "scheduler" not in p.parts}
    assert shipped <= listed, sorted(str(p) for p in shipped - listed)
