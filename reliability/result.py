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

    def expect_refused(self, label: str, call, refused: type[BaseException] | tuple) -> None:
        """One case: ``call()`` must raise one of ``refused`` (anything else, or nothing, is a failure)."""
        self.cases += 1
        try:
            call()
            self.fail(f"{label}: accepted")
        except refused:
            pass
        except Exception as exc:
            self.fail(f"{label}: {type(exc).__name__}: {exc}")

    def row(self) -> dict:
        return {"category": self.category, "cases": self.cases, "failures": len(self.failures),
                "seconds": round(self.seconds, 1), "what": self.detail}
