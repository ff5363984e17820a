"""`drift correct` reads what microscopists have (issue #22): .zspy stores, stacks HyperSpy reads with three signal
dimensions or transposed, colour stacks, its own NaN-padded `--mode expand` output, files without a pixel size."""
import csv
import warnings

import hyperspy.api as hs
import numpy as np
import pytest
from conftest import drift_cli
from test_hyperspy import _stack

warnings.filterwarnings("ignore", category=DeprecationWarning)


def _shifts(csv_path):
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    return rows, np.array([[float(r["dy_px"]), float(r["dx_px"])] for r in rows])


def _correct(tmp_path, source, *extra, name="out.hspy"):
    out = drift_cli("correct", str(source), "-o", str(tmp_path / name), *extra)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def test_zspy_store_in_and_out(tmp_path):
    s, truth = _stack(n=4)
    store = tmp_path / "stack.zspy"
    s.save(str(store))
    assert store.is_dir()
    out = _correct(tmp_path, store, name="aligned.zspy")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "aligned.zspy").is_dir()
    np.testing.assert_allclose(_shifts(tmp_path / "aligned.csv")[1], truth, atol=0.05)
    assert hs.load(str(tmp_path / "aligned.zspy")).metadata.drift_framework.pipeline == "classical"


@pytest.mark.parametrize("layout", ["three signal dimensions", "transposed", "npy"])
def test_stacks_with_the_frame_axis_elsewhere(tmp_path, layout):
    s, truth = _stack(n=4)
    data = np.asarray(s.data)
    if layout == "three signal dimensions":      # (|96, 96, 4): what HyperSpy reads from .emd/.unf
        path = tmp_path / "three.hspy"
        hs.signals.BaseSignal(data).save(str(path))
        axis = 0
    elif layout == "transposed":                  # (96, 96|4)
        path = tmp_path / "transposed.hspy"
        hs.signals.Signal1D(np.moveaxis(data, 0, -1)).save(str(path))
        axis = 2
    else:
        path = tmp_path / "stack.npy"
        np.save(path, data)
        axis = 0
    out = _correct(tmp_path, path)
    assert out.returncode == 0, out.stderr
    assert f"frames along array axis {axis} (4 frames of 96×96 px)" in out.stdout
    np.testing.assert_allclose(_shifts(tmp_path / "out.csv")[1], truth, atol=0.05)
    explicit = _correct(tmp_path, path, "--frame-axis", str(axis), name="explicit.hspy")
    assert explicit.returncode == 0, explicit.stderr
    wrong = _correct(tmp_path, path, "--frame-axis", "7", name="wrong.hspy")
    assert wrong.returncode != 0 and "--frame-axis 7" in wrong.stderr


def test_a_cube_with_no_shortest_axis_asks_for_the_frame_axis(tmp_path):
    path = tmp_path / "cube.npy"
    np.save(path, np.random.default_rng(0).random((32, 32, 32), np.float32))
    out = _correct(tmp_path, path)
    assert out.returncode != 0 and "pass --frame-axis" in out.stderr


def test_colour_stacks_say_what_to_do(tmp_path):
    s, truth = _stack(n=4)
    grey = np.asarray(s.data)
    grey = (255 * (grey - grey.min()) / np.ptp(grey)).astype(np.uint8)
    rgb = hs.signals.Signal1D(np.repeat(grey[..., None], 3, axis=-1))
    rgb.change_dtype("rgb8")
    path = tmp_path / "colour.hspy"
    rgb.save(str(path))
    refused = _correct(tmp_path, path)
    assert refused.returncode != 0 and "colour" in refused.stderr and "--channel" in refused.stderr
    out = _correct(tmp_path, path, "--channel", "gray")
    assert out.returncode == 0, out.stderr
    assert "using the luminance" in out.stdout
    np.testing.assert_allclose(_shifts(tmp_path / "out.csv")[1], truth, atol=0.1)


def test_its_own_expand_output_reads_back(tmp_path):
    s, truth = _stack(n=4)
    raw = tmp_path / "raw.hspy"
    s.save(str(raw))
    assert _correct(tmp_path, raw, "--mode", "expand", name="expanded.hspy").returncode == 0
    expanded = hs.load(str(tmp_path / "expanded.hspy"))
    assert np.isnan(expanded.data).any()
    again = _correct(tmp_path, tmp_path / "expanded.hspy", "--mode", "expand", name="again.hspy")
    assert again.returncode == 0, again.stderr
    assert "NaN-padded frames: measured on rows" in again.stdout
    # already aligned: the second pass finds (almost) nothing to correct, and keeps the padding as NaN
    np.testing.assert_allclose(_shifts(tmp_path / "again.csv")[1], 0.0, atol=0.05)
    back = hs.load(str(tmp_path / "again.hspy")).data
    assert np.isnan(back).any() and np.isfinite(back).mean() > 0.8


def test_nan_inside_the_frames_is_refused(tmp_path):
    s, _ = _stack(n=3)
    data = np.asarray(s.data, np.float32).copy()
    data[1, 40, 40] = np.nan
    path = tmp_path / "holes.hspy"
    hs.signals.Signal2D(data).save(str(path))
    out = _correct(tmp_path, path)
    assert out.returncode != 0 and "frame(s) [1]" in out.stderr


def test_a_plain_tiff_warns_about_its_pixel_size_and_takes_one(tmp_path):
    import tifffile

    s, truth = _stack(n=4)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.asarray(s.data, np.float32), photometric="minisblack")
    out = _correct(tmp_path, path)
    assert out.returncode == 0, out.stderr
    assert "has no pixel size" in out.stderr and "--pixel-size" in out.stderr
    rows, _ = _shifts(tmp_path / "out.csv")
    assert rows[1]["dy_nm"] == "nan"
    given = _correct(tmp_path, path, "--pixel-size", "0.05", name="given.hspy")
    assert given.returncode == 0 and "has no pixel size" not in given.stderr
    rows, got = _shifts(tmp_path / "given.csv")
    np.testing.assert_allclose([float(r["dy_nm"]) for r in rows], got[:, 0] * 0.05, rtol=1e-6)
    assert hs.load(str(tmp_path / "given.hspy")).axes_manager.signal_axes[0].units == "nm"


def test_a_recipe_path_pipeline_is_made_absolute_for_cluster_workers(tmp_path, monkeypatch):
    """Workers of a tcp:// cluster run in another directory: a relative recipe path travels as an absolute one."""
    import json

    from drift_hyperspy.positions import _spec_key

    (tmp_path / "mine.yaml").write_text("pipeline: classical\n")
    monkeypatch.chdir(tmp_path)
    assert json.loads(_spec_key("mine.yaml")) == str(tmp_path / "mine.yaml")
    assert json.loads(_spec_key("classical")) == "classical"


def test_the_docs_say_how_to_get_drift_on_the_path():
    from conftest import ROOT

    for page in (ROOT / "README.md", ROOT / "docs" / "quickstart.md"):
        text = page.read_text()
        assert "source .venv/bin/activate" in text and ".venv/bin/drift" in text
