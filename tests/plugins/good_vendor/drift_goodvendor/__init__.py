"""A third-party plugin used by the tests: a frame source that replays a ramp."""
import numpy as np

from drift_framework import Component, Frame, Param, hookimpl


class Ramp:
    def __init__(self, params, context):
        self.n, self.size = 0, params["size"]

    def acquire(self):
        y, x = np.mgrid[0:self.size, 0:self.size]
        self.n += 1
        return Frame(data=np.sin(0.3 * (x - self.n)).astype(np.float32) + np.cos(0.2 * y), index=self.n - 1,
                     time_s=float(self.n))

    def close(self):
        pass


@hookimpl
def drift_frame_sources():
    return [Component("vendor-ramp", Ramp, {"size": Param("int", 64, ge=8)}, "A test vendor's ramp source")]
