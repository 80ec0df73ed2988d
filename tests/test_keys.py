import json

import numpy as np
import pytest

from wmkit.errors import ConfigError, KeyFileError
from wmkit.keys import generate_key, load_key, parse_message, save_key


def test_round_trip_and_determinism(tmp_path):
    key = generate_key("dwtdct", seed=7)
    path = save_key(key, tmp_path / "k.json")
    loaded = load_key(path, method="dwtdct")
    assert loaded.secret == key.secret and loaded.method == "dwtdct"
    np.testing.assert_array_equal(loaded.bits(32), key.bits(32))
    assert generate_key("dwtdct", seed=7).secret == key.secret  # same seed, same key
    assert generate_key("dwtdct", seed=8).secret != key.secret
    assert generate_key("dwtdct").secret != generate_key("dwtdct").secret  # no seed: random


def test_purposes_are_independent():
    key = generate_key("x", seed=1)
    assert key.seed("message") != key.seed("pattern")


def test_secret_is_never_shown():
    key = generate_key("dwtdct", seed=7)
    assert key.secret.hex() not in repr(key) and key.secret.hex() not in str(key)
    assert key.fingerprint in repr(key)


def test_explicit_message(tmp_path):
    key = generate_key("dwtdct", seed=1, message=parse_message("0110"))
    save_key(key, tmp_path / "k.json")
    assert load_key(tmp_path / "k.json").bits(4).tolist() == [0, 1, 1, 0]
    with pytest.raises(KeyFileError, match="4 bits"):
        key.bits(32)
    with pytest.raises(ConfigError):
        parse_message("01x1")


def test_wrong_method_is_a_clear_error(tmp_path):
    save_key(generate_key("rivagan", seed=1), tmp_path / "k.json")
    with pytest.raises(KeyFileError, match="made for method 'rivagan'"):
        load_key(tmp_path / "k.json", method="dwtdct")


def test_corrupted_key_is_detected(tmp_path):
    path = save_key(generate_key("dwtdct", seed=1), tmp_path / "k.json")
    payload = json.loads(path.read_text())
    payload["secret"] = "00" + payload["secret"][2:]
    path.write_text(json.dumps(payload))
    with pytest.raises(KeyFileError, match="corrupted"):
        load_key(path)
    path.write_text("{not json")
    with pytest.raises(KeyFileError, match="not a wmkit key"):
        load_key(path)
    with pytest.raises(KeyFileError, match="no such key"):
        load_key(tmp_path / "missing.json")


def test_refuses_to_overwrite_a_key(tmp_path):
    save_key(generate_key("dwtdct", seed=1), tmp_path / "k.json")
    with pytest.raises(ConfigError, match="overwrite"):
        save_key(generate_key("dwtdct", seed=2), tmp_path / "k.json")
    assert (tmp_path / "k.json").stat().st_mode & 0o077 == 0  # owner-only permissions
