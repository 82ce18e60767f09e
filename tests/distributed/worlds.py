"""Worlds of CPU processes on gloo for the distributed tests: started, watched and judged.

`run_world` starts one Python process per rank (this file, run as a script), with a hard
timeout. The ranks join one gloo process group through a `FileStore` in a folder of
their own (no port to pick, so none to collide on), run the named scenarios of
`scenarios.py` and `lowmem_scenarios.py` in order, and write a report after each: its
result, or its traceback.
A rank whose scenario fails writes that and exits at once (the others would wait on
it in their next collective); the launcher then ends the rest.

A world is judged by what its ranks reported, not by their exit status alone: gloo
sometimes crashes while the process group is torn down at exit, after every scenario
reported. Such a rank passes (its exit status is kept, and `run_world` warns of it);
a rank that reported an error, stopped reporting (a crash) or ran past the timeout (a
hang) fails the tests of every scenario it had not finished, with its traceback or the
tail of its stderr.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import signal
import subprocess
import sys
import time
import traceback
import warnings
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
TIMEOUT = 240.0  # seconds a world may take, start-up included (a hang fails, not stalls)
COLLECTIVE_TIMEOUT = 90  # seconds gloo waits in a collective before it raises


@dataclasses.dataclass
class World:
    """What a world's ranks reported: per rank, each scenario's ("ok", result) or
    ("error", traceback), and why a rank stopped if it did."""

    size: int
    reports: list[dict[str, tuple[str, Any]]]
    exit_codes: list[int | None]
    failure: str  # '' when every rank reported every scenario

    def results(self, scenario: str) -> list[Any]:
        """Each rank's result of ``scenario``; an AssertionError says why there is none."""
        results = []
        for rank, report in enumerate(self.reports):
            if scenario not in report:
                raise AssertionError(
                    f"rank {rank} of {self.size} did not report {scenario!r}: {self.failure}"
                )
            status, value = report[scenario]
            if status != "ok":
                raise AssertionError(f"{scenario!r} failed on rank {rank} of {self.size}:\n{value}")
            results.append(value)
        return results


def run_world(
    size: int, scenarios: list[str], shared: pathlib.Path, timeout: float = TIMEOUT
) -> World:
    """Runs ``scenarios`` on ``size`` ranks; ``shared`` is a folder every rank (and later
    worlds) may read and write, e.g. for checkpoints."""
    import torch  # (the reports are torch.save'd)

    folder = shared / f"world-{size}-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(SRC), str(HERE), os.environ.get("PYTHONPATH")) if p
        ),
        "OMP_NUM_THREADS": "1",  # up to 4 ranks share this machine's cores
        "RMSPROP_NUM_THREADS": "1",
    }
    ranks = []
    for rank in range(size):
        out = open(folder / f"rank{rank}.log", "wb")  # noqa: SIM115 (closed below)
        command = [sys.executable, __file__, str(folder), str(shared), str(rank), str(size)]
        ranks.append(
            (
                subprocess.Popen(
                    [*command, *scenarios],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed whole
                ),
                out,
            )
        )
    deadline = time.monotonic() + timeout
    failure = ""
    try:
        while any(process.poll() is None for process, _ in ranks):
            stopped = [
                rank
                for rank, (process, _) in enumerate(ranks)
                if process.poll() is not None and not _finished(folder, rank)
            ]
            if stopped:
                # It failed or crashed: the others would wait for it until gloo's timeout.
                failure = (
                    f"rank {stopped[0]} stopped early (exit status {ranks[stopped[0]][0].poll()})"
                )
                break
            if time.monotonic() > deadline:
                failure = f"the world of {size} ran past {timeout:.0f} s (a hang?)"
                break
            time.sleep(0.05)
    finally:
        for process, out in ranks:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            out.close()
    reports = []
    for rank in range(size):
        path = folder / f"rank{rank}.pt"
        report = torch.load(path, weights_only=False) if path.exists() else {}
        reports.append(report.get("scenarios", {}))
        if not report.get("finished"):
            progress = report.get("running", "start-up")
            log = (folder / f"rank{rank}.log").read_text(errors="replace")[-3000:]
            failure += f"\n  rank {rank}: stopped in {progress}; its output ends:\n{log}"
    exit_codes = [process.returncode for process, _ in ranks]
    crashed_after = [
        rank
        for rank, code in enumerate(exit_codes)
        if code != 0 and _finished(folder, rank) and not failure
    ]
    if crashed_after:
        warnings.warn(
            f"ranks {crashed_after} of {size} exited with {[exit_codes[r] for r in crashed_after]} "
            "after reporting every scenario (gloo's teardown at exit); judged by their reports",
            stacklevel=2,
        )
    return World(size, reports, exit_codes, failure.strip())


def _finished(folder: pathlib.Path, rank: int) -> bool:
    return (folder / f"rank{rank}.done").exists()


# ---- the rank's side ----------------------------------------------------------------------


def _save(path: pathlib.Path, report: dict[str, Any]) -> None:
    import torch

    partial = path.with_suffix(".partial")
    torch.save(report, partial)
    os.replace(partial, path)  # a reader never sees half a report


def _main(argv: list[str]) -> None:
    folder, shared, rank, size = pathlib.Path(argv[0]), pathlib.Path(argv[1]), *map(int, argv[2:4])
    names = argv[4:]
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    import lowmem_scenarios  # (this folder is on PYTHONPATH)
    import scenarios

    table = {**scenarios.SCENARIOS, **lowmem_scenarios.SCENARIOS}

    path = folder / f"rank{rank}.pt"
    report: dict[str, Any] = {"scenarios": {}, "running": "init_process_group"}
    _save(path, report)
    store = dist.FileStore(str(folder / "store"), size)
    dist.init_process_group(
        "gloo",
        store=store,
        rank=rank,
        world_size=size,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT),
    )
    context = scenarios.Context(rank=rank, size=size, shared=shared)
    for name in names:
        report["running"] = name
        _save(path, report)
        try:
            result = table[name](context)
        except BaseException:  # DCP's CheckpointException is a BaseException
            report["scenarios"][name] = ("error", traceback.format_exc())
            _save(path, report)
            os._exit(1)  # the others would wait for this rank in their next collective
        report["scenarios"][name] = ("ok", result)
        _save(path, report)
    dist.barrier()
    report.update(running="teardown", finished=True)
    _save(path, report)
    (folder / f"rank{rank}.done").touch()
    dist.destroy_process_group()
    if context.crash_at_exit:  # (the launcher's own test: gloo's teardown crash, imitated)
        os.abort()


if __name__ == "__main__":
    _main(sys.argv[1:])
