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


def test_plugins_and_tools_use_only_public_core_names():
    """Built-ins, benchmarks and the reliability suite import from the core exactly what a vendor can."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("plugins", "benchmarks", "reliability", "docs/plugins/example-vendor"):
        for path in (root / folder).rglob("*.py"):
            if "build" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("drift_framework"):
                    private = [a.name for a in node.names if a.name.startswith("_")]
                    if private or any(part.startswith("_") for part in (node.module or "").split(".")):
                        offenders.append(f"{path.relative_to(root)}:{node.lineno} {node.module} {private}")
    assert offenders == []
