"""Snakemake as the tests run it: this checkout's executable, in the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_snakemake(
    *args: str, warm_start: bool = False, check: bool = True, what: str | None = None
) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` of this checkout's environment, in the repository.

    With ``warm_start`` its run jobs fork from a warm-start server, as under ``make
    reproduce`` (workflow/warm_start.py). With ``check`` a failure raises, naming
    ``what`` ran (by default the command), with Snakemake's output.
    """
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [str(Path(sys.executable).with_name("snakemake")), *args]
    if warm_start:
        command = [sys.executable, str(REPO / "workflow" / "warm_start.py"), "serve", "--",
                   *command]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        what = what or f"snakemake {' '.join(args)}"
        raise AssertionError(f"{what} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def snakemake(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``snakemake --cores 2 ARGS`` (run_snakemake)."""
    return run_snakemake("--cores", "2", *args, check=check)


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the job-stats table of a dry run."""
    counts = {}
    for line in dry_run_output.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts
