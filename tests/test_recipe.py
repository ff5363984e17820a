import textwrap

import pytest
from conftest import ROOT, drift_cli

import drift_framework as df
from drift_framework.recipe import load_recipe

GOOD = textwrap.dedent("""\
    name: t
    source:
      plugin: simulator
      shape: [64, 64]
      spacing_px: 10
      noise: {kind: gaussian, snr: 2.0}
    pipeline:
      correlator: {plugin: ncc}
      estimator: {plugin: parabolic, max_shift_px: 6}
    controller: {plugin: pi}
    actuator:
      plugin: simulated-stage
      limits: {max_step: 5, travel: 100}
    run: {frames: 3}
    """)


def _error(tmp_path, text) -> df.RecipeError:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(df.RecipeError) as err:
        load_recipe(path)
    return err.value


def test_good_recipe_validates(tmp_path):
    (tmp_path / "r.yaml").write_text(GOOD)
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.pipeline["estimator"].params["max_shift_px"] == 6.0
    assert recipe.limits == {"max_step": 5.0, "travel": 100.0}


# (edit of GOOD, expected line, expected key path, expected message fragment)
MISTAKES = [
    (("max_shift_px: 6", "max_shift_px: -1"), 9, "pipeline.estimator.max_shift_px", "must be > 0"),
    (("max_shift_px: 6", "max_shift_px: six"), 9, "pipeline.estimator.max_shift_px", "must be a number"),
    (("plugin: parabolic", "plugin: parabolc"), 9, "pipeline.estimator.plugin", "did you mean 'parabolic'"),
    (("spacing_px: 10", "spacing_px: -3"), 5, "source.spacing_px[0]", "must be > 0"),
    (("snr: 2.0", "snr: 0"), 6, "source.noise.snr", "must be > 0"),
    (("kind: gaussian", "kind: gausian"), 6, "source.noise.kind", "kind must be one of"),
    (("shape: [64, 64]", "shape: [64, 64]\n  lattice: cubic"), 5, "source.lattice", "must be one of hexagonal"),
    (("limits: {max_step: 5, travel: 100}", "limits: {max_step: 5}"), 13, "actuator.limits", "missing required key 'travel'"),
    (("run: {frames: 3}", "run: {frames: 3, frams: 4}"), 14, "run.frams", "unknown key"),
    (("run: {frames: 3}", "run: {frames: 0}"), 14, "run.frames", "must be > 0"),
    (("controller: {plugin: pi}", "controller: {plugin: pi, kp: 5}"), 10, "controller.kp", "must be <= 2"),
    (("shape: [64, 64]", "shape: [64, 64]\n  specimen_px: [32, 32]"), 5, "source.specimen_px", "smaller than the field of view"),
    (("name: t", "name: t\nextra: 1"), 2, "extra", "unknown key"),
    (("spacing_px: 10", "spacing_px: 10\n  spacing_px: 11"), 6, "source.spacing_px", "duplicate key"),
]


@pytest.mark.parametrize("edit,line,path,fragment", MISTAKES, ids=[m[2] + ":" + m[3][:12] for m in MISTAKES])
def test_mistake_names_file_line_and_key(tmp_path, edit, line, path, fragment):
    old, new = edit
    assert old in GOOD
    err = _error(tmp_path, GOOD.replace(old, new, 1))
    text = str(err)
    assert text.startswith(f"{tmp_path / 'recipe.yaml'}:{line}: {path}: "), text
    assert fragment in text


def test_broken_yaml_names_line(tmp_path):
    err = _error(tmp_path, "name: t\nsource: {plugin: simulator\n")
    assert "invalid YAML" in str(err) and err.line is not None


def test_python_object_tags_are_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    err = _error(tmp_path, f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    assert "refused YAML value" in str(err)
    assert not marker.exists()


def test_missing_file_is_one_clear_line(tmp_path):
    out = drift_cli("validate", str(tmp_path / "nope.yaml"))
    assert out.returncode != 0
    assert out.stderr.strip().startswith("error:") and "no such recipe file" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_error_is_one_line_without_traceback(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(GOOD.replace("max_shift_px: 6", "max_shift_px: -1"))
    out = drift_cli("validate", str(path))
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {path}:9: pipeline.estimator.max_shift_px: must be > 0, got -1"


TRAINERS = {"denoiser.yaml": "denoiser", "regressor.yaml": "regressor", "paper.yaml": "regressor",
            "no-denoiser.yaml": "regressor", "bragg-denoiser.yaml": "regressor", "images.yaml": "regressor"}


@pytest.mark.parametrize("config", sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                                           if "calibrations" not in p.parts), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_builds(config):
    trainer = ["--trainer", TRAINERS[config.name]] if "train" in config.parts else []
    out = drift_cli("validate", str(config), *trainer)
    assert out.returncode == 0, out.stderr
    assert ": ok" in out.stdout


def test_frames_that_cannot_fit_in_memory_are_refused_at_validation_with_the_number(monkeypatch):
    import drift_framework.recipe as recipe_module
    from drift_framework.recipe import RecipeError
    from drift_framework.resources import available_memory, frame_memory

    assert available_memory() > 2 ** 30                       # this machine's MemAvailable is read
    monkeypatch.setattr(recipe_module, "available_memory", lambda: 8 * 2 ** 30)   # a machine with 8 GiB free
    with pytest.raises(RecipeError, match=r"<recipe>:2: source.shape: 16384×16384 frames need about 40.0 GiB of "
                                          r"memory to acquire and measure; 8.0 GiB is available"):
        load_recipe("name: big\nsource: {plugin: simulator, shape: [16384, 16384]}\npipeline: classical\n")
    assert frame_memory((4096, 4096)) < 8 * 2 ** 30             # 4096² frames fit (2.7 GB): they validate
    load_recipe("name: ok\nsource: {plugin: simulator, shape: [4096, 4096]}\npipeline: classical\n")
