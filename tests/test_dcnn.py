import json
import os
import pickle

import numpy as np
import pytest
import torch  # noqa: E402
import yaml
from conftest import drift_cli, simulator_source  # noqa: E402

import drift_framework as df
from drift_dcnn import weights  # noqa: E402
from drift_dcnn.models import DenoiserNet, RegressorNet, ncc_window  # noqa: E402


def test_models_accept_any_frame_size():
    net = DenoiserNet().eval()
    for shape in [(1, 1, 64, 64), (2, 1, 97, 130)]:
        assert net(torch.randn(shape)).shape == shape
    reg = RegressorNet(radius=16).eval()
    assert reg(torch.randn(3, 1, 33, 33)).shape == (3, 3)


def test_ncc_window_peaks_at_the_shift():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(64, 64)).astype(np.float32)
    mov = np.roll(img, (3, -2), axis=(0, 1))  # content moved by (+3, −2)
    w = ncc_window(torch.tensor(img)[None], torch.tensor(mov)[None], 8)[0, 0].numpy()
    assert np.unravel_index(w.argmax(), w.shape) == (8 + 3, 8 - 2)
    assert w.max() == pytest.approx(1.0, abs=1e-5)


def test_weights_round_trip_with_model_card(tmp_path):
    net = RegressorNet(radius=8, channels=8, hidden=16)
    card = weights.save(net, tmp_path / "regressor.pt", {"kind": "regressor", "note": "test"})
    assert card["sha256"] == weights.sha256(tmp_path / "regressor.pt")
    loaded = weights.load("regressor", tmp_path / "regressor.pt")
    x = torch.randn(2, 1, 17, 17)
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_corrupt_or_mismatched_weights_are_clear_errors(tmp_path):
    net = DenoiserNet(channels=8, depth=1)
    weights.save(net, tmp_path / "denoiser.pt", {"kind": "denoiser"})
    with pytest.raises(weights.WeightsError, match="does not hold regressor weights"):
        weights.load("regressor", tmp_path / "denoiser.pt")
    data = bytearray((tmp_path / "denoiser.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "denoiser.pt").write_bytes(bytes(data))
    with pytest.raises(weights.WeightsError, match="sha256 differs"):
        weights.load("denoiser", tmp_path / "denoiser.pt")
    (tmp_path / "denoiser.json").unlink()
    (tmp_path / "denoiser.pt").write_bytes(b"not a weights file")
    with pytest.raises(weights.WeightsError, match="not a safe weights file"):
        weights.load("denoiser", tmp_path / "denoiser.pt")
    with pytest.raises(weights.WeightsError, match="no denoiser weights"):
        weights.load("denoiser", tmp_path / "missing.pt")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the payload file is a plain pickle on purpose
def test_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "regressor.pt"
    torch.save({"kind": "regressor", "config": {}, "state_dict": {}, "x": _Payload(marker)}, path)
    with pytest.raises(weights.WeightsError, match="not a safe weights file"):
        weights.load("regressor", path)
    assert not marker.exists()
    with open(path, "wb") as fh:  # a bare pickle too
        pickle.dump(_Payload(marker), fh)
    with pytest.raises(weights.WeightsError):
        weights.load("regressor", path)
    assert not marker.exists()


def _training_recipe(path, name, *, spacing_px=(8, 12), **train):
    """A tiny training recipe on noiseless 64² simulated pairs (the trainer adds the noise)."""
    path.write_text(yaml.safe_dump({"name": name, "train": train, "source": {
        "plugin": "simulator", "spacing_px": list(spacing_px), "rotation_deg": None, "shape": [64, 64],
        "noise": {"kind": "none"}}}))
    return path


def test_short_training_run_lowers_the_loss_and_resumes(tmp_path):
    recipe = _training_recipe(tmp_path / "tiny.yaml", "tiny", batches=60, batch_size=8, patch=48, lr=0.003,
                              channels=8, depth=2, validate_every=20, validation_pairs=8, validation_levels=[1.0],
                              checkpoint_dir=str(tmp_path / "ckpt"), output=str(tmp_path / "den.pt"))
    out = drift_cli("train", "denoiser", str(recipe), "-q")
    assert out.returncode == 0, out.stderr
    card = json.loads((tmp_path / "den.json").read_text())
    losses = [h["loss"] for h in card["history"]]
    gains = [h["metrics"]["uniform 1"]["gain_db"] for h in card["history"]]
    assert len(losses) == 3 and gains[-1] > gains[0] and gains[-1] > 3
    assert card["pairs_seen"] == 480 and card["sha256"] == weights.sha256(tmp_path / "den.pt")
    recipe.write_text(recipe.read_text().replace("batches: 60", "batches: 80"))
    out = drift_cli("train", "denoiser", str(recipe), "-q", "--resume")
    assert out.returncode == 0, out.stderr
    card = json.loads((tmp_path / "den.json").read_text())
    assert [h["batch"] for h in card["history"]] == [20, 40, 60, 80]


@pytest.mark.slow
def test_mixed_lattices_and_poisson_counts_in_training(tmp_path):
    """train.lattices draws pairs from several lattices; Poisson targets have the scale of their counts."""
    from drift_dcnn.data import PairStream, validation_set
    from drift_framework.assembly import build_component
    from drift_framework.recipe import validate_component
    from drift_framework.yamldoc import YamlDoc

    sources = [build_component(validate_component("source", {"plugin": "simulator", "lattice": name,
                                                              "shape": [48, 48], "noise": {"kind": "none"}},
                                                  ("source",), YamlDoc("<t>"))) for name in ("square", "honeycomb")]
    stream = PairStream(sources, {"kinds": ["poisson"], "snr": [1, 1], "dose": [50.0, 50.0]}, seed=1)
    b = stream.batch(6)
    assert b["reference"].shape == (6, 48, 48)
    assert abs(b["clean_reference"].mean() - 50.0) < 1.0 and abs(b["reference"].mean() - 50.0) < 2.0
    val = validation_set(sources, ["uniform"], [1.0], 4, seed=0, names=["square", "honeycomb"])
    assert [v["name"] for v in val] == ["square uniform 1", "honeycomb uniform 1"]
    recipe = tmp_path / "mixed.yaml"
    recipe.write_text("name: mixed\nsource: {plugin: simulator, shape: [64, 64], noise: {kind: none}}\n"
                      "train: {batches: 2, batch_size: 4, patch: 48, channels: 8, depth: 1, validate_every: 2,\n"
                      "        validation_pairs: 4, validation_levels: [1.0], lattices: [square, hexagon],\n"
                      f"        output: {tmp_path / 'd.pt'}, checkpoint_dir: {tmp_path / 'c'}}}\n")
    out = drift_cli("train", "denoiser", str(recipe), "-q")
    assert out.returncode != 0 and "unknown lattice(s) ['hexagon']" in out.stderr and "Traceback" not in out.stderr


def test_shipped_weights_regression_snr1():
    """The shipped weights on 200 fresh seeded pairs at SNR 1 (hexagonal, 128²): success ≥ 98 %."""
    src = simulator_source(shape=[128, 128], spacing_px=[8, 16], rotation_deg=None,
                           noise={"kind": "uniform", "snr": 1.0})
    pipe = df.load_pipeline("dcnn")
    pairs = list(src.pairs(200, seed=987654, crlb=False))
    shifts = pipe.estimate_batch(pairs[0].reference, [])  # empty batch is fine
    assert shifts == []
    err = np.array([np.hypot(*(pipe.estimate(p.reference, p.moving).vector - p.shift)) for p in pairs])
    assert np.mean(err < 0.5) >= 0.98


def test_shipped_model_cards_describe_the_training():
    for kind in ("denoiser", "regressor"):
        card = json.loads(weights.shipped(kind).with_suffix(".json").read_text())
        assert card["sha256"] == weights.sha256(weights.shipped(kind))
        assert card["pairs_seen"] > 0 and card["torch"] and "train:" in card["recipe"]
        assert weights.shipped(kind).stat().st_size < 5_000_000


def test_batch_estimation_matches_pair_by_pair():
    src = simulator_source(shape=[96, 96], spacing_px=10, noise={"kind": "gaussian", "snr": 2.0},
                           drift=[{"kind": "linear", "velocity_px_per_frame": [0.5, -0.3]}], seed=4)
    frames = [src.acquire().data for _ in range(6)]
    pipe = df.load_pipeline("dcnn")
    batch = pipe.estimate_batch(frames[0], frames[1:])
    single = [pipe.estimate(frames[0], f) for f in frames[1:]]
    for b, s in zip(batch, single):
        np.testing.assert_allclose(b.vector, s.vector, atol=1e-4)
    with pytest.raises(df.FrameError, match="differ in shape"):
        pipe.estimate_batch(frames[0], [frames[1][:50]])


def test_the_network_reads_a_central_crop_first_and_the_whole_frames_when_unsure():
    """At 256² the denoiser and the network's map see the central 128² (the training frames' size); refinement and
    candidates read the whole raw frames. Where the crop leaves the network unsure, the answer is the whole
    frames' pipeline's, to the bit."""
    from drift_bench.pairs import pair_source

    crop, whole = df.load_pipeline("dcnn"), df.load_pipeline({"preset": "dcnn", "estimator": {"view_px": None}})
    assert crop.estimator.view_px == 128 and whole.estimator.view_px is None
    for snr, n in ((1.0, 6), (0.1, 12)):
        src = pair_source("simulator", lattice="hexagonal", spacing_px=[8, 16], rotation_deg=None, shape=[256, 256],
                          noise={"kind": "uniform", "snr": snr})
        pairs = list(src.pairs(n, seed=5))
        ref, mov = pairs[0].reference, pairs[0].moving
        cmap = crop.correlate(ref, mov, 128)
        assert cmap.data.shape == (128, 128) and cmap.raw[0].shape == (256, 256)
        assert cmap.whole is not None and cmap.whole().data.shape == (256, 256)
        unsure = 0
        for p in pairs:
            a, b = crop.estimate(p.reference, p.moving), whole.estimate(p.reference, p.moving)
            if snr == 1.0:  # one basin, one refinement on the raw frames
                assert np.hypot(*(a.vector - p.shift)) < 0.5 and a.confidence >= 0.5
                np.testing.assert_allclose(a.vector, b.vector, atol=1e-9)
            elif a.confidence < 0.5:
                unsure += 1
                assert (a.dy, a.dx, a.confidence) == (b.dy, b.dx, b.confidence)
        assert snr == 1.0 or unsure >= 3
    frames = [p.moving for p in pairs[:4]]
    for b, s in zip(crop.estimate_batch(pairs[0].reference, frames), [crop.estimate(pairs[0].reference, f)
                                                                         for f in frames]):
        assert (b.dy, b.dx, b.confidence) == (s.dy, s.dx, s.confidence)


def test_training_prints_a_summary_and_refuses_a_regressor_that_learned_nothing(tmp_path):
    """Two batches of a regressor cannot find shifts: an error naming the checkpoint, no weights, no card; the
    denoiser's training ends with a short table, not the whole model card."""
    recipe = _training_recipe(tmp_path / "reg.yaml", "untrained", spacing_px=[14, 16], batches=2, batch_size=4,
                              radius=8, channels=4, hidden=8, denoiser="none", validate_every=2, validation_pairs=16,
                              validation_levels=[1.0], seed=3, checkpoint_dir=str(tmp_path / "ckpt"),
                              output=str(tmp_path / "reg.pt"))
    out = drift_cli("train", "regressor", str(recipe), "-q")
    assert out.returncode != 0 and "no weights written" in out.stderr and "Traceback" not in out.stderr
    assert "checkpoint" in out.stderr and not (tmp_path / "reg.pt").exists() and not (tmp_path / "reg.json").exists()
    den = _training_recipe(tmp_path / "den.yaml", "tiny", batches=2, batch_size=4, patch=48, channels=4, depth=1,
                           validate_every=2, validation_pairs=4, validation_levels=[1.0],
                           checkpoint_dir=str(tmp_path / "c2"), output=str(tmp_path / "den.pt"))
    out = drift_cli("train", "denoiser", str(den), "-q")
    assert out.returncode == 0, out.stderr
    assert "trained:" in out.stdout and "validation set" in out.stdout and "sha256" in out.stdout
    assert '"history"' not in out.stdout and len(out.stdout.splitlines()) < 15


@pytest.mark.parametrize("preset", ["dcnn", "dcnn-general"])
def test_learned_pipeline_finds_shifts_beyond_its_window_like_the_correlation(preset):
    """Shifts up to 0.45 × a 20–30 px cell (beyond the 8 px the network was trained on), bright and dark columns:
    every shift the classical pipeline finds, the learned one finds; beyond its reach it says it used the
    correlation's candidates."""
    pipe, classical = df.load_pipeline(preset), df.load_pipeline("classical")
    for contrast in ("bright", "dark"):
        src = simulator_source(shape=[128, 128], spacing_px=[20, 30], rotation_deg=None, contrast=contrast,
                               noise={"kind": "poisson", "dose": 20.0})
        for pair in src.pairs(12, seed=31, crlb=False):
            learned, reference = pipe.estimate(pair.reference, pair.moving), classical.estimate(pair.reference,
                                                                                              pair.moving)
            if np.hypot(*(reference.vector - pair.shift)) < 0.5:
                assert np.hypot(*(learned.vector - pair.shift)) < 0.5, (contrast, pair.shift, learned)
            if np.hypot(*pair.shift) > 9:
                assert learned.meta["stage"] == "candidates"


def test_learned_pipeline_passes_scikit_images_camera_cases():
    """scikit-image's registration cases on its camera image (Fourier shifts in three dtypes, an integer shift, a
    zero shift) and crops displaced by up to 40 px of 256: off its training set (no lattice at all) the learned
    pipeline is right on all 13 cases, as classical is."""
    from drift_bench.learned import camera_cases

    for preset in ("dcnn", "dcnn-general", "classical"):
        pipe = df.load_pipeline(preset)
        for _, ref, mov, truth in camera_cases():
            s = pipe.estimate(ref, mov)
            assert np.hypot(s.dy - truth[0], s.dx - truth[1]) < 0.5, (preset, truth, s)


@pytest.mark.parametrize("contrast, dose, seed", [("bright", 2.0, 2056), ("dark", 200.0, 2061)])
def test_learned_pipeline_is_not_confident_where_the_correlation_picks_another_peak(contrast, dose, seed):
    """SrTiO3 [001] (Z^1.7 contrast), 16–40 px cells, as `drift bench learned` draws them (its cell seeds): the
    network picked a candidate a pseudo-lattice vector (a/√2) from the truth that the rivals' comparison did not
    refute, confidently. The correlation's own choice now weighs in: where it picks another candidate, the network's
    answer is not confident and the candidates' answer is taken — never fewer shifts found than classical."""
    from drift_bench.learned import FAMILIES, cell_rows

    params = {**FAMILIES["perovskite [001] (SrTiO3)"], "spacing_px": [16.0, 40.0], "contrast": contrast,
              "shape": [128, 128], "noise": {"kind": "poisson", "dose": dose}}
    pipelines = {name: df.load_pipeline(name) for name in ("classical", "dcnn", "dcnn-general")}
    rows = {r["pipeline"]: r for r in cell_rows(pipelines, params, 40, seed)}
    for name in ("dcnn", "dcnn-general"):
        assert rows[name]["success"] >= rows["classical"]["success"], rows
        assert rows[name]["confident_wrong"] == 0.0, rows
