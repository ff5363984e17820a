"""drift_framework: measure and correct specimen drift in microscope image series.

Public API::

    import drift_framework as df
    pipe = df.load_pipeline("classical")      # a preset name, a recipe path or a dict
    shift = pipe.estimate(reference, moving)  # -> df.Shift (dy, dx, sigma, confidence)
    summary = df.run("configs/quickstart.yaml")

Heavy libraries (torch, hyperspy, Pyro5) are imported only by the plugins that
need them, never here.
"""
__version__ = "0.1.0"

from .assembly import load_pipeline  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .loop import run  # noqa: E402
from .orthogonal import OrthogonalRegistration, register_orthogonal  # noqa: E402
from .pipeline import Pipeline  # noqa: E402
from .recipe import Recipe, RecipeError, load_recipe  # noqa: E402
from .registration import SeriesRegistration, register_series  # noqa: E402
from .registry import RegistryError, get_registry  # noqa: E402
from .steps import Status, Step  # noqa: E402
from .store import read_run  # noqa: E402
from .summary import RunSummary  # noqa: E402
from .types import REQUIRED, Benchmark, BuildContext, Component, CorrelationMap, Frame, FrameError, Param, Preset, Shift, Trainer  # noqa: E402

__all__ = [
    "__version__", "hookimpl", "Frame", "Shift", "CorrelationMap", "Component", "Param", "Preset", "REQUIRED",
    "BuildContext", "Trainer", "Benchmark", "FrameError", "Recipe", "RecipeError", "load_recipe", "RegistryError", "get_registry",
    "Pipeline", "load_pipeline", "run", "RunSummary", "Status", "Step", "read_run", "register_series",
    "SeriesRegistration", "register_orthogonal", "OrthogonalRegistration",
]
