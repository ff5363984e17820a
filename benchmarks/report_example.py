"""The example report and live-view screenshot in docs/report-example/ (linked from docs/live.md).

    python benchmarks/report_example.py            # needs chromium + chromedriver (bash .ci/install-browser)

Runs the quickstart recipe on the virtual microscope in real time with its frames stored, watches it in headless
Chromium through `drift run --live` (a screenshot part-way), then writes `drift report` of the finished run.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "report-example"))
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    recipe = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    recipe["source"]["realtime"] = True
    recipe["source"]["dwell_us"] = 3.0  # 256² at 3 µs: ~0.2 s a frame, a run worth watching
    recipe["run"].update(frames=args.frames, save_frames=True, output="runs/quickstart.h5")
    (work / "quickstart.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    drift = Path(sys.executable).with_name("drift")
    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    proc = subprocess.Popen([str(drift), "run", "quickstart.yaml", "--live", "0", "-q"], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+/", proc.stderr.readline()).group(0)  # type: ignore[union-attr]
        browser.get(url)
        while browser.execute_script("return window.driftLive.rows.length") < int(0.6 * args.frames):
            time.sleep(0.2)
        time.sleep(1.0)  # the last redraw and the images
        browser.save_screenshot(str(out / "live-view.png"))
        proc.wait(timeout=600)
    finally:
        browser.quit()
        proc.kill()
    subprocess.run([str(drift), "report", "runs/quickstart.h5", "-o", str(out.resolve())], check=True, cwd=work)
    shutil.rmtree(work)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
