"""The hard limits the engine puts on every actuator command (largest step, total travel)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Hard limits on actuator commands, in actuator units.

    Parameters
    ----------
    max_step : float
        Largest single move (Euclidean).
    travel : float
        Largest distance from the start position, per axis.
    """

    max_step: float
    travel: float

    def clip(self, command: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, bool]:
        """Clip ``command`` so the step and the resulting position stay inside the limits.

        Returns the command to send and whether it was changed; non-finite components become 0.
        """
        cmd = np.nan_to_num(np.asarray(command, float), nan=0.0, posinf=0.0, neginf=0.0)
        clipped = not np.all(np.isfinite(command))
        cmd = np.clip(cmd, -1e12, 1e12)  # keeps the norm finite
        norm = float(np.hypot(*cmd))
        if norm > self.max_step:
            cmd = cmd * (self.max_step / norm)
            clipped = True
        target = np.clip(position + cmd, -self.travel, self.travel)
        if np.any(np.abs(target - (position + cmd)) > 0):
            clipped = True
        cmd = target - position
        # Rounding must never push a step past the limit.
        norm = float(np.hypot(*cmd))
        if norm > self.max_step:
            cmd = cmd * (self.max_step / norm) * (1 - 1e-12)
        return cmd, clipped
