"""The plugin host: discovery, isolation of broken plugins, the environment switches, the built-ins."""
from __future__ import annotations

import sys
import warnings

import click
import pluggy
import pytest
from click.testing import CliRunner

import polydiff
import polydiff._builtin
import polydiff.plugins
from polydiff import discrete, samplers, schedules
from polydiff.errors import UnknownName
from polydiff.plugins import Registry

#: entry points of the fake distributions used below (name -> (distribution, target))
ENTRY_POINTS = {
    "toy": ("polydiff-toy", "polydiff_toy:plugin"),
    "extras": ("polydiff-fixture-extras", "polydiff_fixture_plugins:extras"),
    "broken": ("polydiff-fixture-broken", "polydiff_fixture_broken"),
    "raises": ("polydiff-fixture-raises", "polydiff_fixture_plugins:raises"),
    "typo": ("polydiff-fixture-typo", "polydiff_fixture_plugins:typo"),
    "zz_duplicate": ("polydiff-fixture-duplicate", "polydiff_fixture_plugins:duplicate_toy"),
}


def install(site, *names, version="1.2.3"):
    for name in names:
        dist, target = ENTRY_POINTS[name]
        site.add(dist, {name: target}, version=version)


def load(reg, only=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.load_entry_points(only)
    return caught


# ------------------------------------------------------------------------------------ built-ins
def test_builtins_register_through_the_hooks(fresh_registry):
    reg = fresh_registry
    rec = reg.plugins["polydiff"]
    assert rec.builtin and rec.status == "ok" and rec.error is None
    assert reg.pm.get_plugin("polydiff") is polydiff._builtin
    for hook in ("register_samplers", "register_schedules", "register_scorers"):
        impls = getattr(reg.pm.hook, hook).get_hookimpls()
        assert [i.plugin for i in impls] == [polydiff._builtin], hook
    builtin_samplers = {**samplers.SAMPLERS, **discrete.SAMPLERS}
    builtin_ladders = {**schedules.LADDERS, "linear_levels": discrete.linear, "power_levels": discrete.power}
    assert rec.samplers == sorted(builtin_samplers) and set(reg.samplers) == set(builtin_samplers)
    assert rec.schedules == sorted(builtin_ladders) and set(reg.schedules) == set(builtin_ladders)
    assert rec.scorers == ["elbo", "reconstruction"] and set(reg.scorers) == {"elbo", "reconstruction"}
    assert {"euler", "heun", "dpmpp_2m"} <= set(rec.samplers)
    assert reg.records()[0] is rec


def test_get_sampler(fresh_registry):
    assert polydiff.get_sampler("euler") is samplers.euler
    with pytest.raises(UnknownName) as info:
        polydiff.get_sampler("eulr")
    msg = str(info.value)
    assert "eulr" in msg and all(name in msg for name in samplers.SAMPLERS)


def test_unknown_scorer_and_modality_list_what_exists(fresh_registry):
    with pytest.raises(UnknownName, match="elbo.*reconstruction"):
        fresh_registry.scorer("nope")
    with pytest.raises(UnknownName, match=r"unknown modality 'nope' \(installed: none\)") as info:
        polydiff.get_modality("nope")
    assert "pip install" not in str(info.value)


def test_unknown_modality_points_at_the_nearest_real_thing(fresh_registry, fixture_plugins, fake_site, monkeypatch):
    """A typo gets the closest installed modality, a pretrained model's name its modality and command, and a
    plugin that is installed but excluded by POLYDIFF_LOAD_PLUGINS is named as such."""
    import polydiff_toy

    fresh_registry.register_plugin(polydiff_toy.plugin, name="toy")
    fresh_registry.modalities["toy"].pretrained["tiny"] = "tiny.safetensors"
    with pytest.raises(UnknownName, match=r"unknown modality 'tpy'; did you mean 'toy'\?"):
        fresh_registry.modality("tpy")
    with pytest.raises(UnknownName, match=r"'tiny' is a pretrained toy model, not a modality: "
                                          r"polydiff sample toy --model tiny$"):
        fresh_registry.modality("tiny")
    install(fake_site, "toy", "extras")
    monkeypatch.setenv("POLYDIFF_LOAD_PLUGINS", "toy")
    monkeypatch.delenv("POLYDIFF_DISABLE_PLUGIN_AUTOLOAD")
    polydiff.plugins.reset()
    with pytest.raises(UnknownName, match=r"installed but not loaded \(not in POLYDIFF_LOAD_PLUGINS\): .*extras"):
        polydiff.plugins.registry().modality("extra_things")


# ------------------------------------------------------------------------------------ each hook
def test_register_modalities_with_a_plugin_object(fresh_registry, fixture_plugins):
    import polydiff_toy
    from polydiff.modality import Encoder

    rec = fresh_registry.register_plugin(polydiff_toy.plugin, name="toy", distribution="polydiff-toy", version="9")
    assert (rec.status, rec.modalities, rec.version) == ("ok", ["toy"], "9")
    assert [i.plugin for i in fresh_registry.pm.hook.register_modalities.get_hookimpls()] == [polydiff_toy.plugin]
    m = polydiff.get_modality("toy")
    assert m.plugin == "toy" and isinstance(m.encoder(None), Encoder)


def test_register_samplers_schedules_scorers_commands(fresh_registry, fixture_plugins):
    import polydiff_fixture_plugins as fx

    reg = fresh_registry
    rec = reg.register_plugin(fx.extras, name="extras")
    assert rec.status == "ok", rec.error
    assert (rec.samplers, rec.schedules, rec.scorers) == (["fixture_euler"], ["fixture_linear"], ["fixture_norm"])
    assert polydiff.get_sampler("fixture_euler") is samplers.euler
    assert schedules.get_ladder("fixture_linear") is fx.linear_ladder
    assert reg.scorer("fixture_norm", "toy").plugin == "extras"
    with pytest.raises(UnknownName, match="works on toy"):
        reg.scorer("fixture_norm", "points")

    assert [i.plugin for i in reg.pm.hook.register_commands.get_hookimpls()] == [fx.extras]

    @click.group()
    def group():
        pass

    reg.add_commands(group)
    assert rec.commands == ["fixture-hello"] and rec.status == "ok"
    result = CliRunner().invoke(group, ["fixture-hello", "you"])
    assert result.exit_code == 0 and result.stdout == "hello you\n"


def test_register_commands_failure_is_recorded_and_cli_keeps_working(fresh_registry, fixture_plugins):
    import polydiff_fixture_plugins as fx

    reg = fresh_registry
    reg.register_plugin(fx.command_fails, name="command_fails")
    reg.register_plugin(fx.extras, name="extras")

    @click.group()
    def group():
        pass

    reg.add_commands(group)
    assert reg.plugins["command_fails"].status == "error"
    assert "fixture command exploded" in reg.plugins["command_fails"].error
    assert "fixture-hello" in group.commands and reg.plugins["extras"].status == "ok"


# ------------------------------------------------------------------------------------ failures
def test_hook_that_raises_contributes_nothing(fresh_registry, fixture_plugins):
    import polydiff_fixture_plugins as fx
    import polydiff_toy

    reg = fresh_registry
    rec = reg.register_plugin(fx.raises, name="raises")
    assert rec.status == "error" and "RuntimeError" in rec.error and "fixture scorer exploded" in rec.error
    assert "fixture_partial" not in reg.samplers and rec.samplers == [] and rec.scorers == []
    assert reg.pm.get_plugin("raises") is None

    @click.group()
    def group():
        pass

    reg.add_commands(group)
    assert "fixture-never" not in group.commands
    # the others keep working, before and after it
    assert reg.register_plugin(polydiff_toy.plugin, name="toy").status == "ok"
    assert polydiff.get_sampler("euler") is samplers.euler and "toy" in reg.modalities


def test_registering_a_non_modality_is_an_error(fresh_registry, fixture_plugins):
    import polydiff_fixture_plugins as fx

    rec = fresh_registry.register_plugin(fx.registers_junk, name="junk")
    assert rec.status == "error" and "Modality" in rec.error and "junk" not in fresh_registry.modalities


def test_missing_package_inside_a_hook_gives_a_pip_hint(fresh_registry, fixture_plugins):
    import polydiff_fixture_plugins as fx

    rec = fresh_registry.register_plugin(fx.needs_package, name="needs")
    assert rec.status == "error" and rec.hint == "pip install polydiff-fixture-absent"
    with pytest.raises(UnknownName, match=r"plugin 'needs' failed to load.*pip install polydiff-fixture-absent"):
        fresh_registry.modality("needed")


def test_misspelled_hook_raises_on_explicit_registration(fresh_registry, fixture_plugins):
    import polydiff_fixture_plugins as fx

    with pytest.raises(pluggy.PluginValidationError, match="register_modalitiez"):
        fresh_registry.register_plugin(fx.typo, name="typo")
    assert "fixture_typo_sampler" not in fresh_registry.samplers
    assert fresh_registry.plugins["typo"].status == "error"
    with pytest.raises(pluggy.PluginValidationError):
        fresh_registry.register_plugin(fx.bad_argument, name="bad_argument")


def test_duplicate_modality_second_plugin_is_an_error(fresh_registry, fixture_plugins):
    import polydiff_fixture_plugins as fx
    import polydiff_toy

    reg = fresh_registry
    first = reg.register_plugin(polydiff_toy.plugin, name="toy")
    second = reg.register_plugin(fx.duplicate_toy, name="duplicate")
    assert first.status == "ok" and second.status == "error"
    assert "'toy'" in second.error and "already registered by plugin 'toy'" in second.error
    assert "modality" in second.error and "modalitie " not in second.error
    assert reg.modalities["toy"].plugin == "toy" and "fixture_dupe_sampler" not in reg.samplers


def test_a_plugin_name_that_is_taken_does_not_hide_the_first(fresh_registry, fixture_plugins):
    import polydiff_toy

    reg = fresh_registry
    new = reg.register_plugin(polydiff_toy.plugin, name="polydiff", distribution="polydiff-toy")
    assert new.status == "error" and "already registered" in new.error and new.name == "polydiff (polydiff-toy)"
    assert reg.plugins[new.name] is new and "toy" not in reg.modalities
    rec = reg.plugins["polydiff"]
    assert rec.builtin and rec.status == "ok" and "euler" in rec.samplers


# ------------------------------------------------------------------------------------ entry points
def test_entry_points_are_loaded_each_on_its_own(fresh_registry, fake_site):
    install(fake_site, "toy", "extras", "broken", "raises", "typo", "zz_duplicate")
    reg = fresh_registry
    caught = load(reg)
    recs = {r.name: r for r in reg.records()}

    toy = recs["toy"]
    assert (toy.status, toy.distribution, toy.version, toy.modalities) == ("ok", "polydiff-toy", "1.2.3", ["toy"])
    assert recs["extras"].status == "ok" and "fixture_euler" in reg.samplers

    broken = recs["broken"]
    assert broken.status == "error" and "polydiff_fixture_missing_dependency" in broken.error
    assert broken.hint == "pip install polydiff_fixture_missing_dependency"
    assert (broken.distribution, broken.version) == ("polydiff-fixture-broken", "1.2.3")

    raises = recs["raises"]
    assert raises.status == "error" and "fixture scorer exploded" in raises.error
    assert "fixture_partial" not in reg.samplers

    typo = recs["typo"]
    assert typo.status == "error" and "register_modalitiez" in typo.error and "unknown hook" in typo.error
    assert "fixture_typo_sampler" not in reg.samplers
    assert any("register_modalitiez" in str(w.message) for w in caught)

    dup = recs["zz_duplicate"]
    assert dup.status == "error" and "already registered by plugin 'toy'" in dup.error
    assert reg.modalities["toy"].plugin == "toy"

    assert recs["polydiff"].status == "ok" and "euler" in reg.samplers


def test_misspelled_hook_warns_when_autoloaded(fresh_registry, fake_site):
    install(fake_site, "typo")
    with pytest.warns(UserWarning, match=r"'typo'.*unknown hook register_modalitiez"):
        fresh_registry.load_entry_points()


def test_load_plugins_limits_loading(fresh_registry, fake_site, monkeypatch):
    install(fake_site, "toy", "extras", "broken")
    monkeypatch.setenv("POLYDIFF_LOAD_PLUGINS", " toy , ghost,polydiff")
    monkeypatch.delenv("POLYDIFF_DISABLE_PLUGIN_AUTOLOAD")
    polydiff.plugins.reset()
    reg = polydiff.plugins.registry()
    recs = {r.name: r for r in reg.records()}
    assert recs["toy"].status == "ok" and "toy" in reg.modalities
    assert recs["extras"].status == "not-loaded" and recs["broken"].status == "not-loaded"
    assert recs["extras"].version == "1.2.3"
    assert "polydiff_fixture_plugins" not in sys.modules and "polydiff_fixture_broken" not in sys.modules
    assert recs["ghost"].status == "error" and recs["ghost"].hint is None  # no look-alike package to install
    assert recs["polydiff"].status == "ok" and recs["polydiff"].builtin


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_disable_autoload(fresh_registry, fake_site, monkeypatch, value):
    install(fake_site, "toy", "broken")
    monkeypatch.setenv("POLYDIFF_DISABLE_PLUGIN_AUTOLOAD", value)
    monkeypatch.setenv("POLYDIFF_LOAD_PLUGINS", "toy")
    polydiff.plugins.reset()
    reg = polydiff.plugins.registry()
    assert [r.name for r in reg.records()] == ["polydiff"] and reg.modalities == {}
    assert "polydiff_toy" not in sys.modules


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_autoload_stays_on(fresh_registry, fake_site, monkeypatch, value):
    install(fake_site, "toy")
    monkeypatch.setenv("POLYDIFF_DISABLE_PLUGIN_AUTOLOAD", value)
    polydiff.plugins.reset()
    assert polydiff.plugins.registry().plugins["toy"].status == "ok"


@pytest.mark.parametrize("target", ["polydiff_toy:plugin", "polydiff_fixture_broken"])
@pytest.mark.parametrize("only", [None, ["toy"]])
def test_entry_point_named_like_the_builtin_is_an_error_not_a_replacement(fresh_registry, fake_site, target, only):
    fake_site.add("polydiff-impostor", {"polydiff": target})
    reg = fresh_registry
    load(reg, only)
    builtin = reg.plugins["polydiff"]
    assert builtin.builtin and builtin.status == "ok" and "euler" in builtin.samplers
    impostors = [r for r in reg.records() if r.distribution == "polydiff-impostor"]
    assert len(impostors) == 1 and impostors[0].status == "error" and "toy" not in reg.modalities
    assert impostors[0].name == "polydiff (polydiff-impostor)" and "already registered" in impostors[0].error


def test_reset_installs_and_forgets(fresh_registry, monkeypatch):
    other = Registry()
    polydiff.plugins.reset(other)
    assert polydiff.plugins.registry() is other
    polydiff.plugins.reset()
    rebuilt = polydiff.plugins.registry()
    assert rebuilt is not other and "polydiff" in rebuilt.plugins


def test_hooks_run_through_pluggy_with_wrappers_and_ordering(fresh_registry, fixture_plugins):
    """Registration calls each hook through pluggy (pm.hook), one plugin at a time: another plugin's wrapper runs
    around every plugin's implementation, and tryfirst / trylast decide the order of command registration."""
    import click
    import polydiff_toy

    seen, order = [], []

    class Watcher:
        @polydiff.hookimpl(wrapper=True)
        def register_modalities(self, register):
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    class Late:
        @polydiff.hookimpl(trylast=True)
        def register_commands(self, cli):
            order.append("late")

    class Early:
        @polydiff.hookimpl(tryfirst=True)
        def register_commands(self, cli):
            order.append("early")

    fresh_registry.register_plugin(Watcher(), name="watcher")
    seen.clear()
    rec = fresh_registry.register_plugin(polydiff_toy.plugin, name="toy")
    assert rec.status == "ok" and "toy" in fresh_registry.modalities
    assert seen == ["before", "after"]  # the wrapper ran around the toy plugin's implementation
    fresh_registry.register_plugin(Late(), name="late")
    fresh_registry.register_plugin(Early(), name="early")
    fresh_registry.add_commands(click.Group("polydiff"))
    assert order == ["early", "late"]
