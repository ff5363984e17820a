"""The live view: `drift run --live` and `drift view` in a real browser (Debian's headless chromium driven by
selenium), the page's controls acting through the engine, and the notebook observer."""
import io
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import drift_cli

from drift_framework.store import STATUS, read_run

HELD = next(k for k, v in STATUS.items() if v == "held")
CORRECTED = next(k for k, v in STATUS.items() if v == "corrected")


def _recipe(path: Path, output: Path, frames: int = 400) -> Path:
    """A closed loop on the virtual microscope scanning in real time: 128² at 6 µs dwell is ~0.1 s a frame."""
    path.write_text(f"""name: watched
source:
  plugin: simulator
  shape: [128, 128]
  dwell_us: 6
  realtime: true
  drift: [{{kind: linear, velocity_px_per_frame: [0.3, -0.2]}}]
  seed: 2
pipeline: classical
controller: {{plugin: kalman}}
actuator:
  plugin: simulated-stage
  limits: {{max_step: 5.0, travel: 2000.0}}
run: {{frames: {frames}, output: {output}, save_frames: true}}
""")
    return path


@pytest.fixture
def browser():
    """Headless Chromium (the Debian packages `chromium` and `chromium-driver`, which .ci/install-browser puts in)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "no chromium / chromedriver on PATH: run bash .ci/install-browser (apt-get, as root)"
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.set_page_load_timeout(60)
    yield session
    session.quit()


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    """Start a drift command that announces a page, and return it with the page's address."""
    exe = Path(sys.executable).with_name("drift")
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not found:
        proc.kill()
        raise AssertionError(f"no page announced: {line}{proc.stderr.read()}")
    return proc, found.group(0)


def _page(browser) -> dict:
    return browser.execute_script("""
        const img = (id) => { const e = document.getElementById(id); return e.complete ? e.naturalWidth : 0; };
        const trace = document.getElementById('trace');
        return {rows: window.driftLive.rows.length, draws: window.driftLive.draws,
                frame: img('frame'), average: img('average'),
                state: document.getElementById('state').textContent,
                notice: document.getElementById('notice').textContent,
                traced: trace.data ? Math.max(0, ...trace.data.map((d) => d.x.length)) : 0,
                pause: document.getElementById('pause').disabled, stop: document.getElementById('stop').disabled};
    """)


def _until(browser, check, timeout_s=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        page = _page(browser)
        if check(page):
            return page
        time.sleep(0.2)
    raise AssertionError(f"the page never got there: {_page(browser)}")


def _not_blank(png: bytes) -> float:
    import matplotlib.image

    image = matplotlib.image.imread(io.BytesIO(png))
    return float(np.std(image[..., :3]))


def test_live_browser_shows_a_running_loop_and_pauses_resumes_and_stops_it(tmp_path, browser):
    out = tmp_path / "watched.h5"
    proc, url = _start(["run", str(_recipe(tmp_path / "r.yaml", out)), "--live", "0", "-q"])
    try:
        browser.get(url)
        first = _until(browser, lambda p: p["frame"] > 0 and p["average"] > 0 and p["traced"] >= 5)
        assert first["frame"] == 128 and first["state"] == "running" and not first["pause"]
        grown = _until(browser, lambda p: p["traced"] >= first["traced"] + 5)  # the trace grows without a reload
        assert grown["draws"] > first["draws"]
        assert _not_blank(browser.get_screenshot_as_png()) > 0.05
        browser.find_element("id", "pause").click()
        paused = _until(browser, lambda p: p["state"].startswith("paused"))
        _until(browser, lambda p: p["rows"] >= paused["rows"] + 5)
        browser.find_element("id", "resume").click()
        resumed = _until(browser, lambda p: p["state"] == "running")
        _until(browser, lambda p: p["rows"] >= resumed["rows"] + 5)
        browser.find_element("id", "stop").click()
        rc = proc.wait(timeout=60)
        ended = _until(browser, lambda p: p["state"] == "interrupted")
        assert "stop button" in ended["notice"] and ended["stop"]
    finally:
        proc.kill()
        proc.wait()
    assert rc == 130, proc.stderr.read()
    run = read_run(out)
    assert "stop button of the live view" in run.summary["stop_reason"]
    status = run.steps["status"]
    held = np.flatnonzero(status == HELD)
    assert len(held) >= 5, "the pause held corrections through the engine"
    assert np.any(status[held.max() + 1:] == CORRECTED), "corrections went on after resume"
    assert np.all(run.steps["command"][held] == 0), "nothing moved while paused"


def test_view_browser_follows_a_run_file_written_by_another_process(tmp_path, browser):
    out = tmp_path / "followed.h5"
    exe = Path(sys.executable).with_name("drift")
    run_proc = subprocess.Popen([str(exe), "run", str(_recipe(tmp_path / "r.yaml", out, frames=60)), "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    view = None
    try:
        for _ in range(100):  # the run file appears after the first frame
            if out.exists():
                break
            time.sleep(0.1)
        view, url = _start(["view", str(out), "--port", "0", "--interval", "0.2"])
        browser.get(url)
        first = _until(browser, lambda p: p["rows"] > 0 and p["frame"] > 0)
        assert first["pause"] and first["stop"] and "view only" in first["notice"]
        assert run_proc.wait(timeout=60) == 0, run_proc.stderr.read()
        done = _until(browser, lambda p: p["state"] == "finished" and p["traced"] == 60 and p["average"] > 0)
        assert done["rows"] == 60 and done["average"] == 128
        assert _not_blank(browser.get_screenshot_as_png()) > 0.05
    finally:
        run_proc.kill()
        if view is not None:
            view.kill()
            view.wait()


def test_live_browser_page_reads_a_finished_run_and_refuses_control(tmp_path, browser):
    """A finished run file: the whole run is shown, the controls are off, and the server refuses a stop (409)."""
    import urllib.error
    import urllib.request

    out = tmp_path / "done.h5"
    assert drift_cli("run", str(_recipe(tmp_path / "r.yaml", out, frames=20)), "-q").returncode == 0
    view, url = _start(["view", str(out), "--port", "0"])
    try:
        browser.get(url)
        page = _until(browser, lambda p: p["state"] == "finished" and p["traced"] == 20 and p["frame"] > 0)
        assert page["frame"] == 128 and "run ended: completed" in page["notice"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url + "control/stop", method="POST"))
        assert refused.value.code == 409
    finally:
        view.kill()
        view.wait()


def test_live_refuses_another_interface_and_a_busy_port_before_the_run(tmp_path):
    out = tmp_path / "never.h5"
    recipe = _recipe(tmp_path / "r.yaml", out, frames=5)
    res = drift_cli("run", str(recipe), "--live", "0", "--live-host", "0.0.0.0", "-q")
    assert res.returncode == 2 and "--live-allow-remote" in res.stderr and "Traceback" not in res.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = drift_cli("run", str(recipe), "--live", str(busy.getsockname()[1]), "-q")
    assert res.returncode == 2 and "cannot serve the live view" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists(), "no run starts without its live view"
    res = drift_cli("view", str(tmp_path / "missing.h5"), "--port", "0")
    assert res.returncode == 2 and "missing.h5" in res.stderr and "Traceback" not in res.stderr


def test_live_notebook_plot_draws_the_trajectory_while_the_run_goes(tmp_path):
    import drift_framework as df
    from drift_live.notebook import LivePlot

    plot = LivePlot(every=2)
    recipe = _recipe(tmp_path / "r.yaml", tmp_path / "nb.h5", frames=8).read_text().replace("realtime: true",
                                                                                            "realtime: false")
    summary = df.run(recipe, observers=[plot])
    assert summary.steps == 8 and len(plot.rows) == 8
    (drift_y, drift_x) = plot.lines["uncorrected drift (measured)"]
    assert len(drift_y.get_xdata()) == 8 and np.isfinite(drift_y.get_ydata()[1:]).all()
    # the drift is 0.3 px/frame in y at 0.03 nm/px: nm on the left axis
    assert drift_y.get_ydata()[-1] == pytest.approx(7 * 0.3 * 0.03, abs=0.02)
    assert plot.figure.get_suptitle().endswith("completed")
    plot.figure.savefig(tmp_path / "nb.png")
    assert (tmp_path / "nb.png").stat().st_size > 10_000
