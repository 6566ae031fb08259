"""Batches on dask.distributed: one task per file on a cluster, napari-free.

:func:`run_distributed` has the shape of the command line's local batch runner
(tasks, a per-task callable returning ``(ok, message)``, outcomes reported as
they arrive, returned in task order), for ``--scheduler ADDRESS`` (an existing
cluster, whose workers must have napari-sasd installed) or ``--dask N`` (a
``LocalCluster`` of N worker processes on this machine).

``dask[distributed]`` is optional (the ``dask`` extra): it is imported only
here, only when a cluster is asked for, and its absence is a one-line error.
The callable runs unchanged on the workers, so the files written are those of
a local run, byte for byte.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
Outcome = tuple[bool, str]

__all__ = ["DaskMissing", "require_dask", "run_distributed"]

INSTALL_HINT = "pip install 'napari-sasd[dask]'"


class DaskMissing(RuntimeError):
    """dask.distributed is not installed (a one-line message saying how to get it)."""


def require_dask() -> None:
    """Raise :class:`DaskMissing` unless ``dask.distributed`` can be imported."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise DaskMissing(
            f"--scheduler and --dask need dask.distributed, which is not installed: {INSTALL_HINT}"
        ) from None


def _guarded(work: Callable[[T], Outcome], task: T, label: Callable[[T], str]) -> Outcome:
    """Run on a worker: an exception fails this task, named, not the batch."""
    try:
        ok, msg = work(task)
        return bool(ok), str(msg)
    except Exception as exc:
        return False, f"{label(task)}: {' '.join(str(exc).split()) or type(exc).__name__}"


def run_distributed(
    tasks: Sequence[T],
    work: Callable[[T], Outcome],
    *,
    address: str | None = None,
    n_workers: int | None = None,
    report: Callable[[bool, str], Any] | None = None,
    label: Callable[[T], str] = str,
) -> list[Outcome]:
    """Run ``work(task)`` for every task on dask.distributed, one task per file.

    Parameters
    ----------
    tasks : sequence
        Picklable tasks (e.g. ``(path, bundle name)`` pairs).
    work : callable(task) -> (ok, message)
        Picklable (a module-level function or a ``functools.partial`` of one).
    address : str, optional
        Scheduler of an existing cluster (``tcp://host:8786``).
    n_workers : int, optional
        Without ``address``: start a ``LocalCluster`` of this many worker
        processes (one thread each; the solver is FFT-bound and holds the GIL).
    report : callable(ok, message), optional
        Called here, in completion order.
    label : callable(task) -> str
        Names a task in the message when its worker fails.

    Returns
    -------
    list of (ok, message)
        One per task, in the order of ``tasks``.

    Raises
    ------
    DaskMissing
        dask.distributed is not installed.
    OSError
        The scheduler cannot be reached (dask's own message).
    """
    require_dask()
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    if address is None and not n_workers:
        raise ValueError("give a scheduler address or a number of local workers")
    results: list[Outcome | None] = [None] * len(tasks)
    cluster = None
    # A task whose worker dies is not re-run on another worker (dask's default
    # is three more tries): a file that kills a worker fails, named. This
    # holds for a LocalCluster, whose scheduler runs here.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        if address is None:
            cluster = LocalCluster(
                n_workers=int(n_workers or 1),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port, never a clash
                silence_logs=logging.ERROR,
            )
        client = Client(address if cluster is None else cluster)
        try:
            run = uuid.uuid4().hex[:8]
            futures = [
                client.submit(_guarded, work, t, label, key=f"napari-sasd-{run}-{i}", pure=False)
                for i, t in enumerate(tasks)
            ]
            index = {f.key: i for i, f in enumerate(futures)}
            for fut in as_completed(futures):
                i = index[fut.key]
                try:
                    outcome = fut.result()
                except Exception as exc:  # the worker died (KilledWorker), or cancelled
                    outcome = (
                        False,
                        f"{label(tasks[i])}: the dask worker running it failed "
                        f"({type(exc).__name__}: {exc}); the other files go on",
                    )
                results[i] = outcome
                if report is not None:
                    report(*outcome)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    return [r for r in results if r is not None]
