"""Progress: a bar on a terminal, plain occasional lines elsewhere, nothing when silenced;
result lines printed while a bar is drawn do not run into it."""
import pytest

from wmkit import progress as progress_module
from wmkit.progress import progress, progress_write, set_default


class _Err:
    """stderr as captured by pytest (not a terminal), read like a StringIO."""

    def __init__(self, capsys):
        self.capsys, self.text = capsys, ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stderr(capsys):
    return _Err(capsys)


def test_not_a_terminal_gives_plain_lines_without_carriage_returns(stderr):
    seen = list(progress(range(5), desc="verify", unit="img", every=0.0))
    assert seen == list(range(5))
    lines = stderr.getvalue().splitlines()
    assert "\r" not in stderr.getvalue()
    assert lines and lines[0].startswith("verify: 1/5 img") and "left" in lines[0]
    assert lines[-1].startswith("verify: 5/5 img")


def test_long_gaps_only_between_lines(stderr):
    bar = progress(total=100, desc="eval", unit="img")  # default: a line at most every 30 s
    for _ in range(100):
        bar.update(1)
    bar.set_postfix(bits="0.99")
    bar.close()
    assert stderr.getvalue() == ""


def test_disabled_and_default_switch(stderr):
    list(progress(range(3), desc="x", enabled=False, every=0.0))
    set_default(False)
    try:
        list(progress(range(3), desc="x", every=0.0))
    finally:
        set_default(None)
    assert stderr.getvalue() == ""


def test_a_single_item_shows_nothing(stderr):
    list(progress([1], desc="x", every=0.0))
    assert stderr.getvalue() == ""


def test_result_lines_go_above_a_drawn_bar(monkeypatch, capsys):
    """With a bar on the terminal, a result line is written through tqdm (which clears the bar
    first), and the bar is forgotten once closed."""
    written = []
    import tqdm

    monkeypatch.setattr(tqdm.tqdm, "write", classmethod(lambda cls, line, file=None: written.append(line)))
    bar = progress(range(3), desc="verify", enabled=True)
    for _ in bar:
        progress_write("a.png: WATERMARKED")
    assert written == ["a.png: WATERMARKED"] * 3
    assert bar not in progress_module._active  # closed with the loop, forgotten


def test_cli_no_progress_reaches_inner_bars(monkeypatch, tmp_path, capsys):
    """`--no-progress` silences the bars drawn inside a command (here: the demo's rows), and
    the switch is reset after the command."""
    from wmkit.cli import main

    calls = []
    real = progress_module.progress

    def spy(*args, **kwargs):
        calls.append(progress_module._default)
        return real(*args, **kwargs)

    monkeypatch.setattr(progress_module, "progress", spy)
    assert main(["demo", "--images", "2", "-m", "dwtdct", "--no-progress", "-o", str(tmp_path / "d")]) == 0
    assert calls and all(value is False for value in calls)
    assert progress_module._default is None
