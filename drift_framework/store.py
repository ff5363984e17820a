"""HDF5 run files: one file per run, one row per step, flushed every step.

The file is written in SWMR mode (single writer, multiple readers), so another
process can read it while the run goes on, and a killed run leaves a readable
file holding every flushed step.  Layout::

    /                 attrs: recipe (YAML text), recipe_path, versions (JSON), started_at,
                             format, finished (only once closed), summary (JSON)
    /steps/<field>    one row per step (see STEP_FIELDS, derived from :class:`~drift_framework.steps.Step`)
    /journal/index    the frame index of every actuator command, written and flushed *before* the actuator moves
    /journal/command  (n, 2) the command, actuator units (a killed run shows what it last sent)
    /frames           optional (n, H, W) float32, chunked per frame, gzip

Open a run with :func:`read_run` (works on a run still being written).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .settings import RunSettings
from .steps import Status, step_columns
from .types import MIN_SIZE

__all__ = ["RunWriter", "RunData", "read_run", "storable", "is_image", "STEP_FIELDS", "STATUS", "StoreError"]

FORMAT = "drift_framework.run/1"

#: field → (per-step shape, dtype, fill value, meaning), from the fields of :class:`Step`
STEP_FIELDS = step_columns()

#: status code → name (stored as the ``status_names`` attribute too); meanings: :class:`Status`
STATUS = {int(s): s.label for s in Status}


class StoreError(OSError):
    """The run file cannot be created or written."""


class RunWriter:
    """Append-only writer of one run file.

    Parameters
    ----------
    path : path-like
        The run file; parent folders are created.
    attrs : dict
        Root attributes written before the first step (recipe text, versions …).
    frame_shape : tuple, optional
        When given, frames are stored in ``/frames``; the row of a frame that cannot be stored (another shape,
        not an image) stays NaN.
    overwrite : bool
        Replace an existing file; otherwise an existing file is a :class:`StoreError` (nothing is touched).
    """

    def __init__(self, path: str | os.PathLike, *, attrs: dict | None = None, frame_shape: tuple | None = None,
                 overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(f"{self.path} exists and is kept; choose another output (-o), or replace it with "
                             "run.overwrite: true (drift run --overwrite)")
        # built under a temporary name and renamed once in SWMR mode: a reader (drift view, drift report) that
        # opened the file before the switch would make the switch fail and the run with it
        creating = self.path.with_name(self.path.name + ".creating")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = h5py.File(creating, "w", libver="latest")
        except OSError as exc:
            raise StoreError(f"cannot create the run file {self.path}: {exc}") from None
        f = self._f
        f.attrs["format"] = FORMAT
        f.attrs["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for key, value in (attrs or {}).items():
            f.attrs[key] = value if isinstance(value, (str, int, float, np.ndarray)) else json.dumps(value)
        grp = f.create_group("steps")
        grp.attrs["status_names"] = json.dumps(STATUS)
        self._ds = {}
        for name, (shape, dtype, _, meaning) in STEP_FIELDS.items():
            self._ds[name] = grp.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                                chunks=(256, *shape))
            self._ds[name].attrs["meaning"] = meaning
        journal = f.create_group("journal")
        self._journal = {"index": journal.create_dataset("index", shape=(0,), maxshape=(None,), dtype="i8",
                                                         chunks=(256,)),
                         "command": journal.create_dataset("command", shape=(0, 2), maxshape=(None, 2), dtype="f8",
                                                           chunks=(256, 2))}
        self._frames = None
        if frame_shape is not None:
            self._frames = f.create_dataset("frames", shape=(0, *frame_shape), maxshape=(None, *frame_shape),
                                            dtype="f4", chunks=(1, *frame_shape), compression="gzip",
                                            compression_opts=1, shuffle=True, fillvalue=np.nan)
        f.swmr_mode = True
        os.replace(creating, self.path)
        self.n = 0
        self._broken = ""

    def _check_room(self) -> None:
        """Refuse a step that would hit the file-size limit or fill the disk: HDF5 cannot recover from a write
        that fails half-way (its file stays consistent only up to the last flush), so we stop before."""
        step = 4096 + (int(np.prod(self._frames.shape[1:])) * 4 * 2 if self._frames is not None else 0)
        size = self.path.stat().st_size
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY and size + 4 * step > soft:
            raise StoreError(f"the run file {self.path} reached the file-size limit ({soft} bytes) after "
                             f"{self.n} steps; earlier steps are saved")
        free = shutil.disk_usage(self.path.parent).free
        if free < 4 * step + 1_000_000:
            raise StoreError(f"the disk holding {self.path} is full ({free} bytes free) after {self.n} steps; "
                             "earlier steps are saved")

    def append(self, row: dict, frame: np.ndarray | None = None) -> None:
        """Write one step and flush it to disk (missing fields get their fill value).

        ``frame`` is stored when frames are kept and its shape is the stored one; otherwise its row is NaN.

        Raises
        ------
        StoreError
            The step cannot be written (file-size limit, disk full, I/O error); earlier steps stay readable.
        """
        unknown = set(row) - set(STEP_FIELDS)
        if unknown:
            raise KeyError(f"unknown step fields: {sorted(unknown)}")
        if self._broken:
            raise StoreError(f"{self.path} cannot be written any more: {self._broken}")
        self._check_room()
        n = self.n + 1
        try:
            for name, ds in self._ds.items():
                ds.resize(n, axis=0)
                ds[n - 1] = row.get(name, STEP_FIELDS[name][2])
            if self._frames is not None:
                self._frames.resize(n, axis=0)
                if frame is not None and np.shape(frame) == self._frames.shape[1:]:
                    self._frames[n - 1] = frame
            self._f.flush()
        except (OSError, RuntimeError) as exc:
            self._broken = f"writing step {n - 1} failed: {exc}"
            raise StoreError(f"writing step {n - 1} to {self.path} failed: {exc}") from None
        self.n = n

    def journal(self, index: int, command: np.ndarray) -> None:
        """Record an actuator command and flush it, before the actuator is moved.

        Raises
        ------
        StoreError
            It cannot be recorded: the command must then not be sent.
        """
        if self._broken:
            raise StoreError(f"{self.path} cannot be written any more: {self._broken}")
        n = self._journal["index"].shape[0] + 1
        try:
            for name, value in (("index", index), ("command", np.asarray(command, float))):
                self._journal[name].resize(n, axis=0)
                self._journal[name][n - 1] = value
            self._f.flush()
        except (OSError, RuntimeError) as exc:
            self._broken = f"journaling command {n - 1} failed: {exc}"
            raise StoreError(f"journaling a command to {self.path} failed: {exc}") from None

    def close(self, summary: dict | None = None) -> None:
        """Close the file and mark it finished (with the run summary as JSON)."""
        if self._f is None:
            return
        if self._broken:
            # closing an HDF5 file after a failed write can crash the library: leave it as last flushed
            self._f = None
            return
        try:
            self._f.close()
        finally:
            self._f = None
        try:
            with _open_for_marking(self.path) as f:
                f.attrs["finished"] = True
                if summary is not None:
                    f.attrs["summary"] = json.dumps(summary, default=_jsonable)
        except OSError as exc:
            raise StoreError(f"could not mark {self.path} finished: {exc}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _open_for_marking(path: Path, wait_s: float = 5.0) -> h5py.File:
    """Open a closed run file to add its final attributes.

    A reader that follows the run (``drift view``, ``drift report``) holds HDF5's shared file lock while it reads,
    so the exclusive lock is retried for ``wait_s``; after that the attributes are written without the lock (a
    reader then sees them at its next read) rather than failing a run whose every step is already on disk.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return h5py.File(path, "r+")
        except BlockingIOError:
            if time.monotonic() > deadline:
                return h5py.File(path, "r+", locking=False)
            time.sleep(0.05)


def is_image(data: Any) -> bool:
    """A real 2-D array of at least ``MIN_SIZE`` pixels a side (its values are not looked at)."""
    shape, kind = getattr(data, "shape", None), getattr(getattr(data, "dtype", None), "kind", "")
    return shape is not None and len(shape) == 2 and kind in "fiub" and kind != "" and min(shape) >= MIN_SIZE


def storable(data: Any) -> np.ndarray | None:
    """``data`` as a float32 image for the run file, or None when it is not a real 2-D image of at least
    ``MIN_SIZE`` pixels a side (the step is then recorded without its frame)."""
    try:
        arr = np.asarray(data)
    except Exception:
        return None
    if not is_image(arr):
        return None
    with np.errstate(all="ignore"):
        return arr.astype(np.float32)



def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


@dataclass
class RunData:
    """A run read back: step arrays, root attributes and (optionally) frames."""

    path: str
    steps: dict
    attrs: dict
    frames: np.ndarray | None = None
    journal: dict | None = None

    @property
    def finished(self) -> bool:
        return bool(self.attrs.get("finished", False))

    @property
    def summary(self) -> dict:
        return json.loads(self.attrs["summary"]) if "summary" in self.attrs else {}

    @property
    def gates(self) -> dict:
        """The run's gating thresholds, ``min_confidence`` and ``max_sigma_px`` (the defaults for files written
        before runs recorded them)."""
        defaults = RunSettings()
        gating = json.loads(self.attrs["gating"]) if "gating" in self.attrs else {}
        return {"min_confidence": float(gating.get("min_confidence", defaults.min_confidence)),
                "max_sigma_px": float(gating.get("max_sigma_px", defaults.max_sigma_px))}

    def __len__(self) -> int:
        return len(self.steps["index"])


def read_run(path: str | os.PathLike, *, frames: bool | slice = False) -> RunData:
    """Read a run file, finished, still being written, or left by a killed run.

    ``frames``: True reads every stored frame, a slice of steps reads those (``slice(n, None)``: the frames after
    the first ``n``, as a viewer following a run does); ``RunData.frames`` is None when no frame is stored.

    Raises
    ------
    StoreError
        The file is missing or not a drift_framework run file.
    """
    path = os.fspath(path)
    try:
        f = h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as exc:
        raise StoreError(f"cannot open run file {path}: {exc}") from None
    with f:
        if f.attrs.get("format") != FORMAT or "steps" not in f:
            raise StoreError(f"{path} is not a drift_framework run file")
        grp = f["steps"]
        steps = {}
        for name in grp:
            ds = grp[name]
            ds.refresh()
            steps[name] = ds[()]
        n = min(len(v) for v in steps.values()) if steps else 0  # a step being written may be partial
        steps = {k: v[:n] for k, v in steps.items()}
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        data = None
        if frames is not False and "frames" in f:
            f["frames"].refresh()
            rows = range(n)[frames if isinstance(frames, slice) else slice(None)]
            data = f["frames"][rows.start:rows.stop:rows.step] if rows.step > 0 else f["frames"][:n][frames]
        journal = None
        if "journal" in f:  # files written before the journal existed have none
            for ds in f["journal"].values():
                ds.refresh()
            journal = {name: ds[()] for name, ds in f["journal"].items()}
            m = min(len(v) for v in journal.values())
            journal = {k: v[:m] for k, v in journal.items()}
    return RunData(path, steps, attrs, data, journal)
