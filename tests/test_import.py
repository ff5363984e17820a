import subprocess
import sys


def test_import_is_light():
    """`import drift_framework` (and loading every plugin registration) imports no torch, hyperspy or Pyro5."""
    code = ("import sys, drift_framework as df; df.get_registry(); df.load_pipeline('classical');"
            "bad = [m for m in ('torch', 'hyperspy', 'Pyro5') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_public_api():
    import drift_framework as df

    for name in ("hookimpl", "Frame", "Shift", "load_recipe", "load_pipeline", "run"):
        assert hasattr(df, name)
