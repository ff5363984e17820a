"""The component contract kit (drift_framework.testing) over every registered built-in component: the checks a
vendor runs on a plugin are the checks the built-ins pass (the example vendor's own tests run them too, from
tests/test_registry.py)."""
import numpy as np
import pytest

from drift_framework.assembly import build_component
from drift_framework.recipe import validate_component
from drift_framework.registry import BUILTIN_PLUGINS, get_registry
from drift_framework.testing import ContractError, check_component, lattice_pair
from drift_framework.types import BuildContext
from drift_framework.yamldoc import YamlDoc

BUILTINS = [(kind, name) for kind, entries in get_registry().components.items() for name, e in sorted(entries.items())
            if e.package in BUILTIN_PLUGINS]


def _spec(kind, name, **params):
    return validate_component(kind, {"plugin": name, **params}, (kind,), YamlDoc("<contract>"))


def _estimator_parts(name):
    """The correlator (and denoiser) of the first preset that uses estimator ``name``; else NCC."""
    for preset, _ in get_registry().presets.values():
        spec = preset.pipeline
        if spec["estimator"]["plugin"] == name:
            denoiser = build_component(_spec("denoiser", **_plugin(spec.get("denoiser", "none"))))
            return {"correlator": build_component(_spec("correlator", **_plugin(spec["correlator"]))),
                    "denoiser": denoiser}
    return {"correlator": build_component(_spec("correlator", "ncc")), "denoiser": None}


def _plugin(spec):
    spec = {"plugin": spec} if isinstance(spec, str) else dict(spec)
    return {"name": spec.pop("plugin"), **spec}


@pytest.fixture(scope="module")
def hardware(tmp_path_factory):
    """What sources and actuators need: a simulator to share, a recorded stack, a real `drift serve`."""
    import hyperspy.api as hs
    from test_pyro5 import SERVED, Server, _free_port

    work = tmp_path_factory.mktemp("contracts")
    simulator = build_component(_spec("source", "simulator", shape=[64, 64]))
    stack = np.stack([simulator.acquire().data for _ in range(4)])
    hs.signals.Signal2D(stack).save(work / "stack.hspy")
    (work / "served.yaml").write_text(SERVED)
    server = Server(work / "served.yaml", _free_port()).start()
    yield {"simulator": simulator, "stack": str(work / "stack.hspy"), "uri": server.uri}
    server.stop()


def _build(kind, name, hardware, owned):
    params = {"path": hardware["stack"]} if name == "hyperspy" else {}
    if name == "pyro5":
        params = {"uri": hardware["uri"], "timeout_s": 5}
    if name == "nion-scan":
        params = {"size": [64, 64], "fov_nm": 16}
    source = hardware["simulator"]
    if kind == "actuator" and name.startswith("nion-"):  # Nion's actuators move the instrument of a nion-scan
        source = build_component(_spec("source", "nion-scan", size=[64, 64], fov_nm=16))
        owned.append(source)
    context = BuildContext(source=source) if kind == "actuator" else BuildContext()
    return build_component(_spec(kind, name, **params), context)


@pytest.mark.parametrize("kind, name", BUILTINS, ids=[f"{k}:{n}" for k, n in BUILTINS])
def test_builtin_component_keeps_its_contract(kind, name, hardware):
    owned: list = []
    try:
        component = _build(kind, name, hardware, owned)
        check_component(kind, component, **(_estimator_parts(name) if kind == "estimator" else {}))
    finally:
        for part in owned:
            part.close()


def test_every_kind_has_built_ins_under_contract():
    assert {kind for kind, _ in BUILTINS} == {"source", "denoiser", "correlator", "estimator", "controller",
                                                "actuator"}


def test_a_broken_component_fails_with_a_message_naming_the_rule():
    class Backwards:  # reports the shift with scikit-image's sign
        def estimate(self, cmap):
            from drift_framework import Shift

            return Shift(-1.3, 0.7, 0.01, 1.0)

    class Ncc:
        def correlate(self, reference, moving):
            return build_component(_spec("correlator", "ncc")).correlate(reference, moving)

    with pytest.raises(ContractError, match="Backwards: measured .-1.300, 0.700. for a true .1.3, -0.7."):
        check_component("estimator", Backwards(), correlator=Ncc())
    reference, moving = lattice_pair((0.0, 0.0))
    assert reference.shape == moving.shape == (96, 96)
