"""The batch runner: outcomes per task, a dead worker fails only its task,
unique output names (issue 17, items 3 and 5)."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import pytest

from napari_sasd.batch import describe_exit, interrupt_once, run_batch, unique_names


def _square(task: int) -> tuple[bool, str]:
    return task % 2 == 0, f"{task}: {task * task}"


def _die_on(task: str, victim: str, marker: str) -> tuple[bool, str]:
    # Stands in for the out-of-memory killer: this worker dies on one file.
    # The others wait for that, then take a while each, so that files are
    # still waiting when the death is noticed (a new worker must take them).
    import time

    if task == victim:
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    while not Path(marker).exists():
        time.sleep(0.01)
    time.sleep(0.3)
    return True, f"{task}: done in {os.getpid()}"


def _raise_on(task: str) -> tuple[bool, str]:
    if task == "b":
        raise RuntimeError("a bug\nin two lines")
    return True, f"{task}: done"


@pytest.mark.parametrize("jobs", [1, 3])
def test_outcomes_come_back_per_task_and_are_reported(jobs):
    seen = []
    out = run_batch(list(range(7)), _square, jobs=jobs, report=lambda ok, m: seen.append(m))
    assert out == [_square(i) for i in range(7)]
    assert sorted(seen) == sorted(m for _, m in out)


def test_a_dead_worker_fails_only_its_own_task_and_the_pool_recovers(tmp_path):
    # Issue 17: one SIGKILLed worker failed every file with "A process in the
    # process pool was terminated abruptly", naming none.
    tasks = list("abcdefg")
    work = partial(_die_on, victim="b", marker=str(tmp_path / "died"))
    out = run_batch(tasks, work, jobs=2, label=lambda t: f"file {t}")
    assert [ok for ok, _ in out] == [t != "b" for t in tasks]
    msg = out[1][1]
    assert msg.startswith("file b: the worker process solving it died (killed by SIGKILL")
    assert "\n" not in msg
    # The rest ran in two workers: the first one, and the one that replaced
    # the dead one.
    pids = {m.rsplit(" ", 1)[1] for ok, m in out if ok}
    assert len(pids) == 2


def test_an_exception_in_the_callable_fails_only_its_task():
    for jobs in (1, 2):
        out = run_batch(list("abc"), _raise_on, jobs=jobs)
        assert out[1] == (False, "b: a bug in two lines")
        assert out[0][0] and out[2][0]


def test_describe_exit():
    assert describe_exit(-9).startswith("killed by SIGKILL, e.g. by the out-of-memory")
    assert describe_exit(-15) == "killed by SIGTERM"
    assert describe_exit(3) == "exit status 3"


def test_unique_names_per_input():
    # Issue 17: d1/x.tif and d2/x.tif both wrote x.sasd; one result lost.
    assert unique_names(["d1/x.tif", "d2/x.tif", "y.tif"]) == ["x_d1", "x_d2", "y"]
    assert unique_names(["a.tif", "a.npy"]) == ["a_tif", "a_npy"]
    assert unique_names(["p/a/t.tif", "q/a/t.tif"]) == ["t_p_a", "t_q_a"]
    # Case-insensitive file systems: X and x are the same bundle.
    names = unique_names(["d1/X.tif", "d2/x.tif"])
    assert names == ["X_d1", "x_d2"]
    # Whatever the inputs, never twice the same name.
    paths = ["x.tif", "d/x.tif", "x.npy", "d/x.npy", "x_d.tif", "e/d/x.tif"]
    names = unique_names(paths)
    assert len({n.lower() for n in names}) == len(paths), names


def test_interrupt_once_ignores_the_second_ctrl_c():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interrupt_once():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10**6):  # the handler runs between bytecodes
            pass
    # Interrupted: the program is ending, further Ctrl-C are ignored.
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
    signal.signal(signal.SIGINT, before)
    with interrupt_once():
        pass
    assert signal.getsignal(signal.SIGINT) is before


def test_same_name_inputs_in_two_folders_both_get_a_bundle(tmp_path, capsys):
    import numpy as np
    import tifffile

    from napari_sasd.cli import main
    from napari_sasd.synthetic import make_synthetic

    for i, d in enumerate(("d1", "d2")):
        (tmp_path / d).mkdir()
        img = make_synthetic((48, 48), 8, 1, seed=i).image.astype(np.float32)
        tifffile.imwrite(tmp_path / d / "x.tif", img)
    out = tmp_path / "dup"
    argv = ["solve", str(tmp_path / "d1" / "x.tif"), str(tmp_path / "d2" / "x.tif"), "-k", "8",
            "-n", "1", "--max-iter", "20", "--progress", "never", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sorted(p.name for p in out.iterdir()) == ["x_d1.sasd", "x_d2.sasd"]
    # Each line says where its bundle went.
    assert lines[0].startswith(str(tmp_path / "d1" / "x.tif"))
    assert lines[0].endswith(str(out / "x_d1.sasd"))
    assert lines[1].endswith(str(out / "x_d2.sasd"))
    assert Path(lines[1].rsplit(" -> ", 1)[1]).is_dir()
