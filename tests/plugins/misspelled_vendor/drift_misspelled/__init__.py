"""A third-party plugin used by the tests: its estimator hook is misspelled (``drift_estimator``)."""
from drift_framework import Component, Shift, hookimpl


class Zero:
    def estimate(self, cmap):
        return Shift(0.0, 0.0, 1.0, 0.0, "zero")


@hookimpl
def drift_estimator():  # the hook is drift_estimators: this registration would be silently lost
    return [Component("vendor-zero", lambda p, ctx: Zero(), {}, "Always zero")]
