import math

import numpy as np
import pytest
from conftest import simulator_source
from scipy import optimize

import drift_framework as df
from drift_simulator.drift import Jumps, Linear, RandomWalk, Settling, Sinusoidal
from drift_simulator.noise import add_noise, fisher_information
from drift_simulator.specimen import LATTICES, Specimen


def _naive_render(spec, origin, shape):
    """Independent reference: a plain loop over atoms and pixels in float64."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros(shape)
    s2 = 2 * spec.probe_sigma_px ** 2
    for y, x, a in zip(spec.y, spec.x, spec.intensity):
        y, x = y - origin[0], x - origin[1]
        if -10 < y < h + 10 and -10 < x < w + 10:
            out += a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / s2)
    return out


@pytest.mark.parametrize("lattice", sorted(LATTICES))
def test_subpixel_shift_is_exact_against_independent_rendering(lattice, rng):
    spec = Specimen.crystal(rng, lattice=lattice, spacing_px=9.0, rotation_deg=23.0, size=(80, 90),
                            vacancy_fraction=0.05, intensity_jitter=0.1)
    shift = (1.37, -2.71)
    fast = spec.render((10.0 - shift[0], 12.0 - shift[1]), (40, 56), dtype=np.float64)
    naive_shifted = _naive_render(spec, (10.0, 12.0), (40, 56))
    # the content moved by +shift: fast[y, x] == naive_unshifted[y - dy, x - dx]
    np.testing.assert_allclose(fast, _naive_render(spec, (10.0 - shift[0], 12.0 - shift[1]), (40, 56)), atol=1e-7)
    yy, xx = np.mgrid[0:40, 0:56]
    moved = Specimen(spec.y + shift[0], spec.x + shift[1], spec.intensity, spec.size, spec.probe_sigma_px,
                     spec.spacing_px, spec.lattice)
    np.testing.assert_allclose(fast, _naive_render(moved, (10.0, 12.0), (40, 56)), atol=1e-7)
    assert not np.allclose(fast, naive_shifted)


def test_analytic_derivatives_match_finite_differences(rng):
    spec = Specimen.crystal(rng, spacing_px=8.0, size=(60, 60))
    _, (gy, gx) = spec.render((5.0, 5.0), (32, 32), derivatives=True, dtype=np.float64)
    h = 1e-4
    fd_y = (spec.render((5.0 - h, 5.0), (32, 32), dtype=np.float64) -
            spec.render((5.0 + h, 5.0), (32, 32), dtype=np.float64)) / (2 * h)
    fd_x = (spec.render((5.0, 5.0 - h), (32, 32), dtype=np.float64) -
            spec.render((5.0, 5.0 + h), (32, 32), dtype=np.float64)) / (2 * h)
    inner = (slice(4, -4), slice(4, -4))  # atoms entering at the 6σ cut-off make the edges step by < 2e-8
    np.testing.assert_allclose(gy[inner], fd_y[inner], atol=1e-6)
    np.testing.assert_allclose(gx[inner], fd_x[inner], atol=1e-6)


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_noise_has_the_requested_snr(kind, rng):
    clean = Specimen.crystal(rng, spacing_px=10.0, size=(300, 300)).render((10, 10), (256, 256))
    noisy, info = add_noise(clean, {"kind": kind, "snr": 0.5}, rng)
    snr = np.std(clean) / np.std(noisy - clean)
    assert abs(snr - 0.5) < 0.01


def test_poisson_noise_has_the_requested_dose(rng):
    clean = 0.1 + Specimen.crystal(rng, spacing_px=10.0, size=(300, 300)).render((10, 10), (256, 256))
    counts, info = add_noise(clean, {"kind": "poisson", "dose": 20.0, "read_noise": 0.0}, rng)
    assert abs(counts.mean() - 20.0) < 0.2
    assert np.all(counts == np.round(counts))
    lam = clean * info["counts_per_unit"]
    assert abs(np.var(counts - lam) / lam.mean() - 1) < 0.05  # Poisson: variance = mean


def test_drift_models_follow_their_trajectories(rng):
    t = np.linspace(0, 10, 101)
    lin = Linear([0.5, -0.2])
    np.testing.assert_allclose([lin(x) for x in t], np.outer(t, [0.5, -0.2]))
    sin = Sinusoidal([1.0, 0.5], period_s=4.0)
    np.testing.assert_allclose(sin(1.0), [1.0, 0.5])
    np.testing.assert_allclose(sin(2.0), [0.0, 0.0], atol=1e-12)
    walks = np.array([[RandomWalk(0.3, np.random.default_rng(i))(x) for x in (0.5, 4.0)][1] for i in range(2000)])
    assert abs(walks.std(axis=0).mean() - 0.3 * 2.0) < 0.05  # std grows as sqrt(t)
    jumps = Jumps(rate_per_s=2.0, size_px=1.5, rng=rng)
    pos = [jumps(x) for x in t]
    steps = np.hypot(*np.diff(pos, axis=0).T)
    assert set(np.round(steps[steps > 0], 6)) <= {1.5} or np.all(steps[steps > 0] >= 1.5 - 1e-9)
    assert 5 < np.count_nonzero(steps) < 40
    settle = Settling(fraction=0.1, tau_s=2.0)
    settle.notify_move(1.0, np.array([10.0, 0.0]))
    np.testing.assert_allclose(settle(1.0), [0, 0])
    np.testing.assert_allclose(settle(3.0), [1.0 * (1 - math.exp(-1)), 0])
    np.testing.assert_allclose(settle(100.0), [1.0, 0], atol=1e-7)


def test_drift_is_time_based(rng):
    slow = simulator_source(shape=[64, 64], dwell_us=4.0, noise={"kind": "none"},
                            drift=[{"kind": "linear", "velocity_px_per_s": [1.0, 0.0]}])
    fast = simulator_source(shape=[64, 64], dwell_us=1.0, noise={"kind": "none"},
                            drift=[{"kind": "linear", "velocity_px_per_s": [1.0, 0.0]}])
    f_slow = [slow.acquire() for _ in range(3)][-1]
    f_fast = [fast.acquire() for _ in range(3)][-1]
    assert f_slow.meta["true_offset_px"][0] == pytest.approx(4 * f_fast.meta["true_offset_px"][0])
    assert f_slow.time_s == pytest.approx(3 * 64 * 64 * 4e-6)


def test_frames_carry_ground_truth_and_pipeline_recovers_it():
    src = simulator_source(shape=[128, 128], spacing_px=10, noise={"kind": "gaussian", "snr": 4.0},
                           drift=[{"kind": "linear", "velocity_px_per_frame": [0.7, -0.4]}], seed=5)
    frames = [src.acquire() for _ in range(4)]
    assert np.allclose(frames[0].meta["true_offset_px"], 0)
    s = df.load_pipeline("classical").estimate(frames[0], frames[3])
    np.testing.assert_allclose(s.vector, frames[3].meta["true_offset_px"], atol=0.05)
    np.testing.assert_allclose(frames[3].meta["true_offset_px"], [2.1, -1.2], atol=1e-7)


def test_seeded_source_is_deterministic():
    a = simulator_source(shape=[64, 64], seed=9, drift=[{"kind": "random-walk", "step_px_per_frame": 0.3}])
    b = simulator_source(shape=[64, 64], seed=9, drift=[{"kind": "random-walk", "step_px_per_frame": 0.3}])
    for _ in range(3):
        fa, fb = a.acquire(), b.acquire()
        np.testing.assert_array_equal(fa.data, fb.data)


def _stage(**params):
    from drift_framework.assembly import build_component
    from drift_framework.recipe import validate_component
    from drift_framework.yamldoc import YamlDoc

    src = simulator_source(shape=[64, 64], pixel_size_nm=0.05, noise={"kind": "none"})
    spec = validate_component("actuator", {"plugin": "simulated-stage", "limits": {"max_step": 1, "travel": 1},
                                           **params}, ("actuator",), YamlDoc("<t>"),
                              reserved={"limits": df.Param("any"), "calibration": df.Param("any")})
    spec.params.pop("limits"), spec.params.pop("calibration")
    return src, build_component(spec, df.BuildContext(source=src))


def test_stage_calibration_rotation_and_scale():
    src, stage = _stage(rotation_deg=30.0, scale_nm_per_px=0.06)
    stage.move_by(stage.calibration @ np.array([2.0, -1.0]))  # a field-of-view move of (2, -1) px
    np.testing.assert_allclose(src.fov_px(src.time_s + 1), [2.0, -1.0], atol=1e-12)
    assert np.linalg.norm(stage.calibration @ [1.0, 0.0]) == pytest.approx(0.06)


def test_stage_backlash_travel_limits_quantization_and_lag():
    src, stage = _stage(backlash_nm=1.0, travel_nm=10.0, step_nm=0.5)
    stage.move_by([3.0, 0.0])
    assert stage.position_nm(src.time_s)[0] == pytest.approx(2.5)  # half the dead band lost
    stage.move_by([-1.0, 0.0])                                       # reversal inside the dead band
    assert stage.position_nm(src.time_s)[0] == pytest.approx(2.5)
    stage.move_by([100.0, 0.0])
    assert stage.commanded[0] == 10.0 and stage.limit_hits == 1
    src2, lagged = _stage(settle_s=1.0, delay_frames=1)
    lagged.move_by([4.0, 0.0])
    assert lagged.position_nm(src2.time_s)[0] == 0.0                # one frame of delay
    src2.acquire()
    src2.acquire()
    t = lagged.t_move
    assert lagged.position_nm(t + 1.0)[0] == pytest.approx(4.0 * (1 - math.exp(-1)))


def test_crlb_matches_monte_carlo_ml_fit():
    """Variance of a maximum-likelihood fit of the shift (known specimen, Gaussian noise) vs the bound J⁻¹."""
    rng = np.random.default_rng(4)
    spec = Specimen.crystal(rng, spacing_px=7.0, rotation_deg=10.0, size=(60, 60))
    origin, shape = np.array([14.0, 14.0]), (24, 24)
    clean, der = spec.render(origin, shape, derivatives=True, dtype=np.float64)
    sigma = float(np.std(clean)) / 1.0
    bound = np.linalg.inv(fisher_information(der, {"kind": "gaussian"}, clean, {"noise_std": sigma}))
    true = np.array([0.3, -0.2])
    model = lambda d: spec.render(origin - d, shape, dtype=np.float64)  # noqa: E731
    target = model(true)
    estimates = []
    for _ in range(300):
        noisy = target + rng.normal(0, sigma, shape)
        fit = optimize.least_squares(lambda d, noisy=noisy: (model(d) - noisy).ravel(), true, method="lm")
        estimates.append(fit.x)
    cov = np.cov(np.array(estimates).T)
    assert np.trace(cov) == pytest.approx(np.trace(bound), rel=0.2)


def test_pairs_have_shifts_inside_the_unit_cell_and_a_bound():
    src = simulator_source(shape=[64, 64], spacing_px=[8, 12], rotation_deg=None)
    for p in src.pairs(20, seed=1):
        assert np.hypot(*p.shift) <= 0.45 * p.meta["spacing_px"]
        assert p.reference.shape == (64, 64) and p.reference.dtype == np.float32
        assert np.all(np.linalg.eigvalsh(p.crlb) > 0)


def test_bad_simulator_parameters_are_recipe_errors(tmp_path):
    for body, fragment in [("spacing_px: -2", "must be > 0"), ("noise: {kind: gaussian, snr: 0}", "must be > 0"),
                           ("lattice: cubic", "must be one of"), ("noise: {kind: pink}", "kind must be one of"),
                           ("specimen_px: [100, 100]", "smaller than the field of view")]:
        path = tmp_path / "r.yaml"
        path.write_text(f"name: t\nsource:\n  plugin: simulator\n  shape: [128, 128]\n  {body}\npipeline: classical\n")
        with pytest.raises(df.RecipeError, match=fragment) as err:
            df.load_recipe(path)
        assert err.value.line == 5


def test_pair_batch_is_deterministic_and_stacked():
    src = simulator_source(shape=[48, 64], spacing_px=[8, 10])
    a, b = src.pair_batch(5, seed=3), src.pair_batch(5, seed=3)
    assert a["reference"].shape == (5, 48, 64) and a["shift"].shape == (5, 2) and a["crlb"].shape == (5, 2, 2)
    np.testing.assert_array_equal(a["moving"], b["moving"])


def _vibrating_source(amplitude, seed=4):
    return simulator_source(lattice="perovskite", spacing_px=[24.0], rotation_deg=[30.0], shape=[256, 256],
                            contrast="dark", noise={"kind": "none"}, seed=seed,
                            drift=[{"kind": "linear", "velocity_px_per_frame": [-0.5, 1.5]}],
                            vibration={"amplitude_px": amplitude, "frequency_hz": 400.0})


def test_vibration_displaces_lines_and_leaves_the_random_stream_alone():
    steady = simulator_source(lattice="perovskite", spacing_px=[24.0], rotation_deg=[30.0], shape=[256, 256],
                              contrast="dark", noise={"kind": "none"}, seed=4,
                              drift=[{"kind": "linear", "velocity_px_per_frame": [-0.5, 1.5]}]).acquire()
    still = _vibrating_source([0.0, 0.0]).acquire()
    np.testing.assert_array_equal(still.data, steady.data)  # no vibration: exactly the frames of before
    shaken = _vibrating_source([2.0, 0.0]).acquire()
    assert shaken.meta["vibration_mean_px"].shape == (2,)
    assert abs(shaken.meta["vibration_mean_px"][0]) < 0.2 and shaken.meta["vibration_mean_px"][1] == 0.0
    # a y vibration moves whole lines along y: rows differ from the steady frame, the content is the same crystal
    diff = np.abs(shaken.data - steady.data).mean(axis=1)
    assert diff.max() > 0.05 * np.ptp(steady.data)
    assert abs(shaken.data.mean() - steady.data.mean()) < 0.02 * np.ptp(steady.data)


def test_dark_contrast_is_a_positive_signal_below_a_bright_background_with_poisson_noise():
    src = simulator_source(shape=[64, 64], spacing_px=[10], contrast="dark", noise={"kind": "poisson", "dose": 10.0},
                           seed=5)
    frame = src.acquire().data
    assert frame.min() >= 0 and np.median(frame) > 0.5 * frame.max() / 2   # bright background, dark columns
    clean = simulator_source(shape=[64, 64], spacing_px=[10], contrast="dark", noise={"kind": "none"}, seed=5)
    image = clean.acquire().data
    assert image.min() >= 0.1 - 1e-6 and image.max() > 1.0                  # baseline at the darkest column


def test_dark_contrast_stays_positive_where_columns_overlap():
    """Dumbbells (two columns 0.16 of the cell apart) add up above either column's peak: the bright background is
    set above the overlap, so no pixel is clipped at zero (a clipped pixel would make the Cramér–Rao bound zero)."""
    src = simulator_source(shape=[96, 96], lattice="dumbbell", spacing_px=[12], contrast="dark",
                           noise={"kind": "none"}, seed=3)
    image = src.acquire().data
    assert 0.05 < image.min() < 0.2     # the darkest point is near the baseline (0.1), never clipped at 0
    pair = next(simulator_source(shape=[96, 96], lattice="dumbbell", spacing_px=[12], contrast="dark",
                                 noise={"kind": "poisson", "dose": 20.0}).pairs(1, seed=1))
    assert 0.005 < np.sqrt(np.trace(pair.crlb)) < 0.5


def test_large_fields_of_view_render_in_bands_with_bounded_memory():
    import tracemalloc

    from drift_simulator.specimen import Specimen

    spec = Specimen.crystal(np.random.default_rng(0), lattice="hexagonal", spacing_px=12.0, rotation_deg=10.0,
                            size=(1100, 1100))
    tracemalloc.start()
    banded, (by, bx) = spec.render((20.3, 30.7), (1024, 1024), derivatives=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * Specimen.RENDER_BUDGET                       # a whole-frame product would take ~1 GB here
    whole = Specimen.RENDER_BUDGET
    try:
        Specimen.RENDER_BUDGET = 10 ** 12
        full, (fy, fx) = spec.render((20.3, 30.7), (1024, 1024), derivatives=True)
    finally:
        Specimen.RENDER_BUDGET = whole
    for a, b in ((banded, full), (by, fy), (bx, fx)):
        np.testing.assert_allclose(a, b, atol=1e-4 * float(np.abs(b).max()))


def test_pixel_scan_time_renders_every_pixel_at_its_own_time_with_a_truth_field():
    """scan_time: pixel — drift during the scan: each pixel's content offset is the drift at its acquisition time
    (row after row, dwell per pixel), the frame is sheared accordingly, and the truth per pixel comes with it."""
    common = dict(shape=[96, 96], spacing_px=[16], rotation_deg=[10.0], noise={"kind": "gaussian", "snr": 1e4},
                  drift=[{"kind": "linear", "velocity_px_per_frame": [4.0, -3.0]}], seed=3)
    scanned = simulator_source(scan_time="pixel", **common)
    first, second = scanned.acquire(), scanned.acquire()
    field = second.meta["true_field_px"]
    assert field.shape == (96, 96, 2) and "true_field_px" not in simulator_source(**common).acquire().meta
    line = second.meta["scan"]["line_time_s"]
    assert second.meta["scan"]["pixel_time_s"] * 96 == pytest.approx(line)
    # offsets count from the first frame's mean position (mid-frame), where the engine's reference is: frame 1
    # starts half a frame of drift after it and ends one and a half frames after it
    np.testing.assert_allclose(field[0, 0], [2.0, -1.5], atol=0.05)
    np.testing.assert_allclose(field[-1, -1], [6.0, -4.5], atol=0.05)
    np.testing.assert_allclose(second.meta["true_offset_px"], field.mean(axis=(0, 1)), atol=1e-6)
    np.testing.assert_allclose(first.meta["true_field_px"][0, 0], [-2.0, 1.5], atol=0.05)
    np.testing.assert_allclose(first.meta["true_offset_px"], [0.0, 0.0], atol=1e-6)
    # row r of the scanned frame is row r of an instant render at that row's offset
    for r in (5, 48, 90):
        instant = scanned.clean(scanned.specimen, scanned.origin0 - field[r].mean(axis=0) - scanned.drift0, (96, 96))
        assert np.abs(instant[r] - second.data[r]).max() < 0.02 * np.abs(instant[r]).max()
    # a rigid estimate between two scanned frames is the difference of their mean offsets
    shift = df.load_pipeline("classical").estimate(first.data, second.data)
    np.testing.assert_allclose(shift.vector, second.meta["true_offset_px"] - first.meta["true_offset_px"], atol=0.2)


def test_pixel_scan_time_gives_the_columns_undistorted_positions():
    """meta['true_columns_px']: the atom columns of the undistorted view (the first frame's mean position), so a
    registered average can be scored column by column: in a still frame they sit on the image's intensity peaks."""
    still = simulator_source(scan_time="pixel", shape=[96, 96], spacing_px=[16], rotation_deg=[10.0],
                             noise={"kind": "gaussian", "snr": 1e4}, drift=[], seed=3).acquire()
    columns = still.meta["true_columns_px"]
    assert columns.ndim == 2 and columns.shape[1] == 2 and len(columns) > 20
    image = still.data.astype(float)
    inner = columns[np.all((columns > 3) & (columns < 92), axis=1)]
    for y, x in inner:
        iy, ix = int(round(y)), int(round(x))
        patch = image[iy - 1:iy + 2, ix - 1:ix + 2]
        assert patch[1, 1] == patch.max()  # the brightest pixel is the one the column falls in
        # sub-pixel: the parabola through the peak's neighbours
        dy = 0.5 * (patch[0, 1] - patch[2, 1]) / (patch[0, 1] - 2 * patch[1, 1] + patch[2, 1])
        dx = 0.5 * (patch[1, 0] - patch[1, 2]) / (patch[1, 0] - 2 * patch[1, 1] + patch[1, 2])
        assert abs(iy + dy - y) < 0.15 and abs(ix + dx - x) < 0.15
