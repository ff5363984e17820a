"""The outcome of one fault category."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Result:
    """Cases tried, failures (each a line saying what went wrong) and a description of what was tried."""

    category: str
    cases: int = 0
    failures: list = field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0

    def fail(self, why: str) -> None:
        self.failures.append(why)

    def row(self) -> dict:
        return {"category": self.category, "cases": self.cases, "failures": len(self.failures),
                "seconds": round(self.seconds, 1), "what": self.detail}
