import os
import subprocess
import sys

import pytest
from conftest import drift_cli

import drift_framework as df
from drift_framework.registry import RegistryError, get_registry


def _pythonpath(*dirs):
    return os.pathsep.join([str(d) for d in dirs] + [os.environ.get("PYTHONPATH", "")])


def test_builtin_components_and_presets():
    reg = get_registry()
    assert "simulator" in reg.names("source")
    assert {"xcorr", "ncc", "phase"} <= set(reg.names("correlator"))
    assert {"peak", "parabolic", "gaussian", "centroid", "upsampled-dft", "gauss-newton", "skimage"} <= set(
        reg.names("estimator"))
    assert {"classical", "phase", "ncc-peak"} <= set(reg.presets)


def test_unknown_name_lists_available_and_closest():
    with pytest.raises(RegistryError) as err:
        get_registry().get("estimator", "gaus-newton")
    msg = str(err.value)
    assert "did you mean 'gauss-newton'" in msg and "parabolic" in msg and "upsampled-dft" in msg
    with pytest.raises(df.RecipeError, match="unknown pipeline preset 'clasical'.*did you mean 'classical'"):
        df.load_pipeline("clasical")


def test_third_party_plugin_found_through_its_entry_point(vendor_site):
    out = drift_cli("plugins", env={"PYTHONPATH": _pythonpath(vendor_site / "good_vendor"), "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "vendor-ramp" in out.stdout and "drift-goodvendor" in out.stdout


def _run_vendor_recipe(vendor_site, tmp_path, frames: int):
    """`drift run` of a recipe whose source is the installed test vendor's; returns the run file read back."""
    recipe = tmp_path / "vendor.yaml"
    recipe.write_text("name: vendor\nsource: {plugin: vendor-ramp, size: 64}\npipeline: ncc-peak\n"
                      f"run: {{frames: {frames}, output: {tmp_path / 'v.h5'}}}\n")
    out = drift_cli("run", str(recipe), "-q", env={"PYTHONPATH": _pythonpath(vendor_site / "good_vendor")})
    assert out.returncode == 0, out.stderr
    return df.read_run(tmp_path / "v.h5")


def test_third_party_source_runs_a_recipe(vendor_site, tmp_path):
    assert _run_vendor_recipe(vendor_site, tmp_path, 5).steps["index"].tolist() == [0, 1, 2, 3, 4]


def test_broken_plugin_is_reported_and_skipped(vendor_site):
    env = {"PYTHONPATH": _pythonpath(vendor_site / "broken_vendor", vendor_site / "good_vendor"), "COLUMNS": "200"}
    out = drift_cli("plugins", env=env)
    assert out.returncode == 0, out.stderr
    assert "vendor-ramp" in out.stdout  # the good plugin still loads
    assert "brokenvendor" in out.stdout and "vendor SDK not found" in out.stdout


def test_name_clash_names_both_packages(vendor_site):
    code = ("import drift_framework as df\n"
            "try:\n    df.get_registry().get('source', 'simulator')\n"
            "except df.RegistryError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=_pythonpath(vendor_site / "clash_vendor")))
    assert "drift_simulator" in out.stdout and "drift-clashvendor" in out.stdout, out.stdout + out.stderr


def test_disable_plugins_blocks_by_name(vendor_site):
    code = "import drift_framework as df; print(sorted(df.get_registry().components['source']))"
    env = dict(os.environ, PYTHONPATH=_pythonpath(vendor_site / "good_vendor"), DRIFT_DISABLE_PLUGINS="goodvendor")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "vendor-ramp" not in out.stdout and "simulator" in out.stdout, out.stdout + out.stderr


def test_example_vendor_template_installs_lists_and_passes_its_tests(tmp_path):
    """docs/plugins/example-vendor: a real install from its folder, `drift plugins`, and its own test suite."""
    from conftest import ROOT

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(ROOT / "docs" / "plugins" / "example-vendor")], check=True, capture_output=True)
    env = {"PYTHONPATH": _pythonpath(site), "COLUMNS": "200"}
    out = drift_cli("plugins", env=env)
    assert "acme-camera" in out.stdout and "acme-stage" in out.stdout and "drift-acme" in out.stdout
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(ROOT / "docs" / "plugins" / "example-vendor" / "tests")],
                           capture_output=True, text=True, env=dict(os.environ, **env), cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "5 passed" in tests.stdout  # including the contract kit (drift_framework.testing)


def test_a_misspelled_hook_is_refused_with_a_message_naming_the_plugin(vendor_site):
    env = {"PYTHONPATH": _pythonpath(vendor_site / "misspelled_vendor", vendor_site / "good_vendor"),
           "COLUMNS": "200"}
    out = drift_cli("plugins", env=env)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "vendor-ramp" in text and "vendor-zero" not in text
    assert "plugin misspelled" in text and "drift_estimator (did you mean drift_estimators?)" in text


def test_register_checked_refuses_unknown_hooks_in_process():
    from drift_framework.registry import register_checked

    class Observer:
        @df.hookimpl
        def drift_step_complete(self, run, step):  # drift_step_completed
            pass

    pm = get_registry().plugin_manager
    with pytest.raises(RegistryError, match="drift_step_complete .did you mean drift_step_completed"):
        register_checked(pm, Observer(), "typo-observer")
    assert not pm.has_plugin("typo-observer")


def test_run_files_record_plugin_versions_from_distribution_metadata(vendor_site, tmp_path):
    import importlib.metadata
    import json

    versions = json.loads(_run_vendor_recipe(vendor_site, tmp_path, 3).attrs["versions"])
    assert versions["drift-goodvendor"] == "1.2.3"
    assert versions["drift_classical"] == importlib.metadata.version("drift_framework")
    assert "unknown" not in versions.values()
