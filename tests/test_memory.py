"""wmkit.memory: the command line keeps freed memory for reuse (glibc), and says where it cannot."""
import subprocess
import sys

import pytest

# A chain of convolutions and GELUs over 32 MiB feature maps (the shape of an extractor's
# reading), run five times; printed: whether the setting took effect, then the page faults of
# each run. Kept memory: the later runs fault on none of their pages.
SCRIPT = """
import resource, sys, torch, torch.nn.functional as F
from wmkit.memory import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "1" else False
torch.set_num_threads(1)
w, x = torch.randn(8, 8, 3, 3), torch.randn(1, 8, 1024, 1024)
def faults_of_one_run():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():
        F.gelu(F.conv2d(F.gelu(F.conv2d(x, w, padding=1)), w, padding=1)).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, *[faults_of_one_run() for _ in range(5)])
"""


def _faults(apply: bool) -> tuple[bool, list[int]]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, "1" if apply else "0"], capture_output=True, text=True, check=True)
    applied, *faults = out.stdout.split()
    return applied == "True", [int(f) for f in faults]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_memory_is_reused_once_asked_and_not_before():
    pages = 32 * 2**20 // 4096  # of one feature map
    applied, faults = _faults(True)
    assert applied and faults[0] > pages and max(faults[1:]) < pages // 10, faults
    # without it, every new map is fresh pages again (what the setting is for)
    applied, faults = _faults(False)
    assert not applied and min(faults[1:]) > pages, faults


def test_asking_twice_is_harmless_and_the_library_does_not_ask_on_import():
    out = subprocess.run([sys.executable, "-c", "import wmkit, wmkit.memory as m; print(m._applied, m.reuse_freed_memory(), m.reuse_freed_memory())"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"
    assert out.stdout.split()[1] == out.stdout.split()[2]
