"""Run one callable over many files, in worker processes, napari-free.

:func:`run_batch` is the command line's batch runner: it takes the tasks and a
per-task callable returning ``(ok, message)`` and reports each outcome as it
arrives. With ``jobs > 1`` the tasks run in worker processes that it manages
itself rather than through :class:`concurrent.futures.ProcessPoolExecutor`,
because the executor's failure modes are the batch's weak points:

- a worker that dies (SIGKILL, the kernel's out-of-memory killer) breaks the
  whole executor, failing every task with a message naming none; here only
  the task that worker held fails, named, and a new worker takes over;
- Ctrl-C could leave the main process waiting forever on a worker blocked on a
  pipe, and a second Ctrl-C printed tracebacks; here workers ignore SIGINT
  (the terminal sends it to the whole process group), the main process
  terminates them (SIGTERM, then SIGKILL) and re-raises one
  ``KeyboardInterrupt`` for the caller, with SIGINT ignored from then on.

Workers are started with the ``spawn`` method (no inherited threads or Qt
state); the callable and the tasks must be picklable (module-level functions,
:func:`functools.partial` of them, plain data).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

T = TypeVar("T")
Outcome = tuple[bool, str]

__all__ = ["describe_exit", "interrupt_once", "run_batch", "unique_names"]

#: Seconds a terminated worker gets to clean up (remove its temporary bundle
#: folder) before it is killed.
TERMINATE_GRACE = 3.0


def run_batch(
    tasks: Sequence[T],
    work: Callable[[T], Outcome],
    *,
    jobs: int = 1,
    report: Callable[[bool, str], Any] | None = None,
    label: Callable[[T], str] = str,
) -> list[Outcome]:
    """Run ``work(task)`` for every task; report each outcome as it arrives.

    Parameters
    ----------
    tasks : sequence
        The tasks (e.g. ``(path, bundle name)`` pairs); picklable for ``jobs > 1``.
    work : callable(task) -> (ok, message)
        Does one task and should not raise (report failures as ``(False,
        "FILE: message")``); an exception it raises anyway fails its task only.
    jobs : int
        Tasks run at the same time: 1 runs them here, in order; more runs them
        in that many worker processes.
    report : callable(ok, message), optional
        Called in this process, in completion order.
    label : callable(task) -> str
        Names a task in the message when its worker dies or ``work`` raises
        (default ``str``); called in this process only.

    Returns
    -------
    list of (ok, message)
        One per task, in the order of ``tasks``.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, after every worker has been stopped.
    """
    results: list[Outcome | None] = [None] * len(tasks)

    def done(i: int, outcome: Outcome) -> None:
        results[i] = outcome
        if report is not None:
            report(*outcome)

    if jobs <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            done(i, _guarded(work, task, label))
    else:
        _run_parallel(tasks, work, min(jobs, len(tasks)), done, label)
    return [r for r in results if r is not None]


def _guarded(work: Callable[[T], Outcome], task: T, label: Callable[[T], str]) -> Outcome:
    ok, msg = _attempt(work, task)
    return (ok, msg) if ok is not None else (False, f"{label(task)}: {msg}")


def _attempt(work: Callable[[T], Outcome], task: T) -> tuple[bool | None, str]:
    # (ok, message), or (None, error) when ``work`` raised: a bug in it fails
    # this task, not the batch.
    try:
        ok, msg = work(task)
        return bool(ok), str(msg)
    except Exception as exc:
        return None, " ".join(str(exc).split()) or type(exc).__name__


@dataclass
class _Worker:
    process: Any
    conn: Connection
    task: tuple[int, Any] | None = None


def _run_parallel(
    tasks: Sequence[T],
    work: Callable[[T], Outcome],
    jobs: int,
    done: Callable[[int, Outcome], None],
    label: Callable[[T], str],
) -> None:
    ctx = get_context("spawn")
    pending = deque(enumerate(tasks))
    workers: list[_Worker] = []

    def start() -> _Worker:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, work), daemon=True)
        # Started with SIGINT ignored, which the new interpreter keeps: a
        # Ctrl-C in the terminal reaches the workers too, and must not print
        # a KeyboardInterrupt traceback from each of them.
        with _sigint_ignored():
            proc.start()
        child.close()
        w = _Worker(proc, parent)
        workers.append(w)
        return w

    def feed(w: _Worker) -> None:
        if pending:
            w.task = pending.popleft()
            w.conn.send(w.task)
        else:
            w.task = None
            with contextlib.suppress(OSError):
                w.conn.send(None)  # no more work: the worker exits

    try:
        for _ in range(jobs):
            feed(start())
        while any(w.task is not None for w in workers):
            busy = [w for w in workers if w.task is not None]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in busy:
                if w.task is None:
                    continue
                if w.conn in ready or w.conn.poll():
                    try:
                        i, (ok, msg) = w.conn.recv()
                    except (EOFError, OSError):
                        i = None
                    if i is not None:
                        if ok is None:  # ``work`` raised
                            ok, msg = False, f"{label(w.task[1])}: {msg}"
                        done(i, (ok, msg))
                        feed(w)
                        continue
                if w.process.sentinel in ready or not w.process.is_alive():
                    # Died holding a task (killed, out of memory): that file
                    # fails, named; a fresh worker carries on with the rest.
                    w.process.join()
                    i, task = w.task
                    w.task = None
                    w.conn.close()
                    workers.remove(w)
                    done(
                        i,
                        (
                            False,
                            f"{label(task)}: the worker process solving it died "
                            f"({describe_exit(w.process.exitcode)}); the other files go on",
                        ),
                    )
                    if pending:
                        feed(start())
    except BaseException:
        # Ctrl-C (or a bug): no second Ctrl-C from here on, and no worker left.
        _ignore_sigint()
        raise
    finally:
        _stop(workers)


def _stop(workers: list[_Worker]) -> None:
    for w in workers:
        if w.process.is_alive() and w.task is not None:
            w.process.terminate()  # SIGTERM: the worker exits, cleaning up
    for w in workers:
        w.process.join(TERMINATE_GRACE)
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.conn.close()


def _worker_main(conn: Connection, work: Callable[[Any], Outcome]) -> None:
    # In the worker process. SIGINT is the main process's business; SIGTERM
    # (sent by it) exits through SystemExit so that cleanups run (a bundle
    # being written removes its temporary folder).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        i, task = msg
        conn.send((i, _attempt(work, task)))


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def describe_exit(code: int | None) -> str:
    """How a process ended, from its exit code (negative: killed by a signal)."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ", e.g. by the out-of-memory killer" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {code}"


def _ignore_sigint() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def interrupt_once() -> Iterator[None]:
    """Within this block, the first Ctrl-C raises ``KeyboardInterrupt`` and
    the next ones are ignored (no second traceback while stopping).

    The previous SIGINT handler comes back on leaving the block, unless a
    Ctrl-C ended it: the program is then ending, and a second Ctrl-C during
    the interpreter's shutdown (where Python's own handler is gone) would kill
    it by the signal. Does nothing outside the main thread (where Python
    cannot set signal handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    fired = []

    def first(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        fired.append(signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        # Caught inside the block or not, a Ctrl-C means the program is ending.
        signal.signal(signal.SIGINT, signal.SIG_IGN if fired else old)


def unique_names(paths: Sequence[os.PathLike[str] | str]) -> list[str]:
    """One output name per input path, unique (ignoring case, for the file
    systems that do).

    The file's stem; where stems collide, the suffix when that tells them
    apart (``a_tif``, ``a_npy``), then as many parent folders as needed
    (``x_d1``, ``x_d2``), then a number.
    """
    from pathlib import Path

    ps = [Path(p) for p in paths]
    names = [p.stem for p in ps]
    for group in _clashes(names):
        if len({ps[i].suffix.lower() for i in group}) > 1:
            for i in group:
                names[i] = f"{ps[i].stem}_{ps[i].suffix.lstrip('.')}"
    base = list(names)
    for depth in range(1, 4):
        for group in _clashes(names):
            for i in group:
                folders = [q.name for q in ps[i].absolute().parents if q.name][:depth]
                names[i] = "_".join([base[i], *reversed(folders)])
    for group in _clashes(names):
        for n, i in enumerate(group[1:], start=2):
            names[i] = f"{names[i]}_{n}"
    return names


def _clashes(names: list[str]) -> list[list[int]]:
    seen: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        seen.setdefault(n.lower(), []).append(i)
    return [g for g in seen.values() if len(g) > 1]
