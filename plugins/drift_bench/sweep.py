"""Run the cells of a benchmark sweep in this process, on dask's local schedulers, or on a dask.distributed cluster.

A cell is one noise level (or one setting) of a sweep: the worker simulates the cell's pairs from their seed, so every
scheduler sees identical pairs, and runs every pipeline on them, so time ratios to scikit-image are measured in the
same process. dask is imported only when a scheduler is asked for.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

SCHEDULERS = ("threads", "processes", "synchronous")


def check_scheduler(scheduler: str | None) -> None:
    """Raise ValueError for a scheduler name that is neither a dask local scheduler nor ``tcp://host:port``."""
    if scheduler is None or scheduler in SCHEDULERS or scheduler.startswith("tcp://"):
        return
    raise ValueError(f"unknown scheduler {scheduler!r}: use {', '.join(SCHEDULERS)} or tcp://HOST:PORT "
                     "(default: in this process)")


def map_cells(fn: Callable[[Any], Any], cells: Sequence, *, scheduler: str | None = None,
              done: Callable[[int], None] | None = None) -> list:
    """``[fn(cell) for cell in cells]``, run where ``scheduler`` says.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function of one cell.
    cells : sequence
        The cells, picklable.
    scheduler : str, optional
        None: in this process, one cell after the other. ``threads``, ``processes``, ``synchronous``: dask's
        local schedulers. ``tcp://HOST:PORT``: an existing dask.distributed cluster.
    done : callable, optional
        Called with the index of each cell as it finishes (drives a progress bar).

    Returns
    -------
    list
        The results, in the order of ``cells``.
    """
    check_scheduler(scheduler)
    if scheduler is None:
        out = []
        for i, cell in enumerate(cells):
            out.append(fn(cell))
            if done:
                done(i)
        return out
    if scheduler.startswith("tcp://"):
        from distributed import Client, as_completed

        with Client(scheduler, timeout="10s") as client:
            futures = client.map(fn, list(cells), pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            for future in as_completed(futures):
                if done:
                    done(index[future.key])
            return client.gather(futures)
    import dask
    from dask.callbacks import Callback

    tasks = [dask.delayed(fn, pure=False)(cell) for cell in cells]
    keys = {t.key: i for i, t in enumerate(tasks)}

    class _Done(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if done and key in keys:
                done(keys[key])

    with _Done():
        return list(dask.compute(*tasks, scheduler=scheduler))
