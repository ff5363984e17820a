import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent
# The real STEM stack lives in shared/ beside the checkout (CI: same place); DRIFT_REAL_DATA overrides.
REAL_DATA = next((p for p in (Path(os.environ.get("DRIFT_REAL_DATA", "/nonexistent")),
                              ROOT.parent / "shared" / "data" / "real", ROOT / "shared" / "data" / "real")
                  if p.is_dir()), ROOT.parent / "shared" / "data" / "real")


def drift_cli(*args, env=None, cwd=None, timeout=300):
    """Run the installed ``drift`` command in a subprocess."""
    exe = Path(sys.executable).with_name("drift")
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def vendor_site(tmp_path_factory):
    """The test vendor packages, really installed (pip --target) into a site directory."""
    site = tmp_path_factory.mktemp("vendor_site")
    for name in ("good_vendor", "broken_vendor", "clash_vendor", "misspelled_vendor"):
        sub = site / name
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(sub), str(HERE / "plugins" / name)], check=True, capture_output=True)
    return site


def simulator_source(**params):
    from drift_framework.assembly import build_component
    from drift_framework.recipe import validate_component
    from drift_framework.yamldoc import YamlDoc

    spec = validate_component("source", {"plugin": "simulator", **params}, ("source",), YamlDoc("<test>"))
    return build_component(spec)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _restore_environment():
    """dask.distributed's LocalCluster sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in the parent's environment, which
    services started by later tests (drift serve) inherit: their frames then differ in the last bits."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)
