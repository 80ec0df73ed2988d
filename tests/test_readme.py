"""README's snippets run as written: every ```python block (each in a fresh interpreter),
every ```sh block (in order, in one scratch folder, with this environment's `wmkit` and
`python` first on PATH), and the demo of its first command. ```text blocks are templates
with paths the reader fills in (their own checkpoints) and are not run; the code paths they
show are tested on tiny models in test_diffusion / test_stable_signature / test_ssl."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def environment(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["WMKIT_CACHE"] = str(tmp_path / "cache")  # a new reader's empty cache: Stable Signature fine-tunes for real
    env["MPLBACKEND"] = "Agg"
    return env


def test_readme_has_the_snippets_the_tests_expect():
    # a README edit that turned a runnable block into another language would skip it silently
    assert len(blocks("python")) >= 2 and len(blocks("sh")) >= 2
    assert {lang for lang, _ in FENCE.findall(README.read_text())} <= {"python", "sh", "text"}


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_snippet_runs(index, tmp_path):
    code = blocks("python")[index]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"README python block {index} failed:\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), "every tour block prints what it found"


@pytest.mark.slow
def test_shell_snippets_run(tmp_path):
    script = "set -euo pipefail\n" + "\n".join(blocks("sh"))
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=environment(tmp_path), capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, f"README shell blocks failed:\n--- stderr ---\n{done.stderr[-3000:]}"
    # what the tour promises: marked photos detected, unmarked ones not, a report with its heatmap
    lines = done.stdout.splitlines()
    assert any(line.startswith("marked/") and "WATERMARKED" in line for line in lines)
    assert all("not detected" in line for line in lines if line.startswith("photos/") and "p=" in line)
    assert (tmp_path / "report" / "heatmap.png").is_file() and (tmp_path / "verdicts.jsonl").stat().st_size > 0
    assert any(line.startswith("generated/") and "WATERMARKED" in line for line in lines)


@pytest.mark.slow
def test_first_command_runs_the_demo(tmp_path):
    """The first README command ends in `wmkit demo`: run that part (the install is what CI did)."""
    first = next(line.strip() for line in README.read_text().splitlines() if line.startswith("    python3 -m venv"))
    command = first.split("&&")[-1].strip()
    assert command == ".venv/bin/wmkit demo"
    done = subprocess.run([str(Path(sys.executable).parent / "wmkit"), "demo"], cwd=tmp_path, env=environment(tmp_path),
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning" not in done.stderr.lower(), done.stderr[-3000:]  # nothing a user cannot act on
    assert (tmp_path / "wmkit-demo" / "heatmap.png").is_file()
