"""Storage faults: the run file's size limit is hit mid-run (RLIMIT_FSIZE), and the output cannot be created.
Each must end with one clear error line, a non-zero exit, no traceback, and a run file whose earlier steps read
back intact."""
from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from .process import RECIPE, check_run_file
from .result import Result


def _limit(nbytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def _clear(out: subprocess.CompletedProcess) -> str | None:
    err = out.stderr.strip()
    if out.returncode == 0:
        return "exit status 0"
    if "Traceback" in err:
        return "a traceback"
    if len(err.splitlines()) != 1:
        return f"{len(err.splitlines())} lines of error: {err[:300]!r}"
    return None


def storage_faults(work: Path, sizes=(200_000, 400_000, 1_000_000)) -> Result:
    work.mkdir(parents=True, exist_ok=True)
    drift = str(Path(sys.executable).with_name("drift"))
    result = Result("storage faults", detail=f"file-size limit hit mid-run at {', '.join(f'{s // 1000} kB' for s in sizes)}; "
                                             "output folder is a file; output is a folder")
    for size in sizes:
        output = work / f"full-{size}.h5"
        recipe = work / "full.yaml"
        recipe.write_text(RECIPE.format(output=output).replace("frames: 100000", "frames: 2000"))
        out = subprocess.run([drift, "run", str(recipe), "-q"], capture_output=True, text=True, timeout=300,
                             preexec_fn=_limit(size))
        result.cases += 1
        problem = _clear(out)
        if problem is None and "run file" not in out.stderr and "write" not in out.stderr:
            problem = f"the error does not say what failed: {out.stderr.strip()!r}"
        problem = problem or check_run_file(output)
        if problem:
            result.fail(f"size limit {size}: {problem}")
    blocker = work / "not-a-folder"
    blocker.write_text("x")
    for label, output in (("output folder is a file", blocker / "run.h5"), ("output is a folder", work)):
        recipe = work / "blocked.yaml"
        recipe.write_text(RECIPE.format(output=output).replace("frames: 100000", "frames: 5"))
        out = subprocess.run([drift, "run", str(recipe), "-q"], capture_output=True, text=True, timeout=120)
        result.cases += 1
        problem = _clear(out)
        if problem:
            result.fail(f"{label}: {problem}")
    return result
