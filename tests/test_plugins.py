"""Third-party schemes and attacks register through entry points (groups wmkit.watermarkers and
wmkit.attacks): a small plug-in package, installed for the test by putting it and its
metadata (a .dist-info folder, what pip writes) on sys.path."""
import sys
import textwrap

import pytest

import wmkit
from wmkit import catalog, registry
from wmkit.cli import main

PLUGIN = '''
"""A plug-in: a scheme (a class named by its entry point) and a module of attacks."""
from wmkit.attacks.valuemetric import Brightness
from wmkit.registry import register_attack
from wmkit.watermarkers.peers import DwtDct


class PluginMark(DwtDct):
    """DwtDct under another name, from a plug-in."""


@register_attack("plugin_dim")
class Dim(Brightness):
    """Brightness under another name, from a plug-in."""
'''

ENTRY_POINTS = """
[wmkit.watermarkers]
plugin_mark = wmkit_test_plugin:PluginMark
not_a_scheme = wmkit_test_plugin:Dim
broken = wmkit_test_plugin_missing:Nothing

[wmkit.attacks]
plugin_attacks = wmkit_test_plugin
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "wmkit_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "wmkit_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wmkit-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    registry.list_watermarkers()  # the built-ins and any plug-ins installed before this one
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for reg, name in ((registry.WATERMARKERS, "plugin_mark"), (registry.ATTACKS, "plugin_dim")):
        reg._entries.pop(name, None)
    catalog._loaded_plugins.difference_update({(g, v) for g, v in catalog._loaded_plugins if "wmkit_test_plugin" in v})
    sys.modules.pop("wmkit_test_plugin", None)


def test_plugin_schemes_and_attacks_register_and_run(plugin, small_photos, capsys):
    with pytest.warns(UserWarning) as warned:
        loaded = catalog.load_plugins()
    assert sorted(loaded) == ["plugin_attacks", "plugin_mark"]
    messages = " ".join(str(w.message) for w in warned)
    assert "'broken'" in messages and "'not_a_scheme'" in messages and "not a wmkit Watermarker" in messages
    assert "not_a_scheme" not in registry.list_watermarkers() and "broken" not in registry.list_watermarkers()

    wm = wmkit.create("plugin_mark")
    key = wmkit.generate_key("plugin_mark", seed=3)
    marked = wm.embed(small_photos[:1], key)
    dimmed = wmkit.create_attack("plugin_dim", factor=0.9)(marked[0][None])
    assert wm.detect(dimmed, key)[0].p_value < 1e-3
    assert catalog.load_plugins() == []  # loaded once

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "plugin_mark" in out and "plugin_dim" in out


def test_a_fresh_process_loads_installed_plugins_on_first_use(plugin):
    import os
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin), *sys.path]))
    proc = subprocess.run([sys.executable, "-m", "wmkit.cli", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "plugin_mark" in proc.stdout and "plugin_dim" in proc.stdout
    assert "'broken'" in proc.stderr  # the warning names the plug-in that failed
