"""Key screening against the shipped calibrations (what keygen guarantees)."""
import json

import numpy as np
import pytest

import wmkit
from wmkit.cli import main
from wmkit.errors import ConfigError
from wmkit.keys import generate_key
from wmkit.screening import screen_key, screening_limit


def test_weak_explicit_message_is_refused_unless_forced():
    wm = wmkit.create("dwtdct")  # decodes ~85% zeros on clean photos
    zeros = generate_key("dwtdct", seed=1, message=[0] * 32)
    with pytest.raises(ConfigError, match="weak message"):
        screen_key(wm, zeros, explicit_message=True)
    kept, report = screen_key(wm, zeros, explicit_message=True, force=True)
    assert kept.message == zeros.message and "warning" in report


def test_weak_derived_message_is_redrawn_and_stored(monkeypatch):
    # Few random messages are weak under the real limit (DwtDct's corpus calibration reads 37%
    # ones), so a stricter limit, the median over 40 keys, stands in for it: half the draws fail.
    from wmkit import screening

    wm = wmkit.create("dwtdct")
    expected = [wm.null_model.expected_matches(generate_key("dwtdct", seed=s).bits(32)) for s in range(40)]
    limit = float(np.median(expected))
    monkeypatch.setattr(screening, "screening_limit", lambda num_bits: limit)
    weak_seed = next(s for s in range(40) if expected[s] > limit)
    key, report = screen_key(wm, generate_key("dwtdct", seed=weak_seed), explicit_message=False)
    assert key.message is not None and "redrew" in report
    assert wm.null_model.expected_matches(np.array(key.message)) <= limit  # the guarantee


def test_cli_keygen_screens(tmp_path, capsys):
    assert main(["keygen", "-m", "dwtdct", "--message", "0" * 32, "-o", str(tmp_path / "k.json")]) == 2
    assert "weak message" in capsys.readouterr().err and not (tmp_path / "k.json").exists()
    assert main(["keygen", "-m", "dwtdct", "--seed", "3", "-o", str(tmp_path / "k2.json")]) == 0
    message = json.loads((tmp_path / "k2.json").read_text())["message"]
    wm = wmkit.create("dwtdct")
    bits = np.array([int(c) for c in message]) if message else generate_key("dwtdct", seed=3).bits(32)
    assert wm.null_model.expected_matches(bits) <= screening_limit(32)


@pytest.mark.parametrize("method", ["hidden", "stable_signature"])
def test_extractor_keys_are_screened_against_their_shipped_calibration(method):
    """The project's own extractor ships a calibration too, so its keys are screened: the
    message the fitted null leans towards most is judged by its expected clean matches."""
    wm = wmkit.create(method)
    null = wm.null_model
    assert null is not None, f"{method} ships with a calibration"
    n = wm.num_bits
    one_rates = (1 / (1 + np.exp(-(null.intercepts[None] + null.loadings[None] * null.theta_means[:, None])))).mean(0)
    favourite_bits = (one_rates > 0.5).astype(np.uint8)
    expected = null.expected_matches(favourite_bits)
    assert expected > n / 2
    # a payload is written masked (ExtractorBits.message), so the favourite payload is harmless...
    as_payload = generate_key(method, seed=1, message=favourite_bits.tolist())
    assert null.expected_matches(wm.message(as_payload)) < expected
    # ...and screening judges the written bits: a payload that happens to be written as the favourite
    key = generate_key(method, seed=1)
    written_as_favourite = key.with_message((favourite_bits ^ wm._payload_mask(key)).tolist())
    np.testing.assert_array_equal(wm.message(written_as_favourite), favourite_bits)
    if expected > screening_limit(n):
        with pytest.raises(ConfigError, match="weak message"):
            screen_key(wm, written_as_favourite, explicit_message=True)
    else:
        assert screen_key(wm, written_as_favourite, explicit_message=True) == (written_as_favourite, "")
    assert "not screened" not in screen_key(wm, generate_key(method, seed=2), explicit_message=False)[1]
