"""workflow/warm_start.py: jobs forked from a warm-start server behave as fresh processes.

A job run through the client must see the client's working directory, environment,
arguments and standard streams, return its exit status (or 128 + N for a signal N),
die with its client, and compute what a fresh interpreter computes; without a usable
server the client runs the job itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test starts a server and client processes

WARM_START = Path(__file__).resolve().parents[2] / "workflow" / "warm_start.py"
MARKER = "xml.dom.minidom"  # imported by the server only: in a job's sys.modules iff forked

JOB = f"""
import os, sys
print("forked" if {MARKER!r} in sys.modules else "fresh", os.getcwd(), os.environ["JOB_VALUE"])
print("args", sys.argv[1:])
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise RuntimeError("the job failed")
if sys.argv[1] == "sleep":
    sys.stdout.flush()
    open("job.pid", "w").write(str(os.getpid()))
    import time
    time.sleep(60)
raise SystemExit(int(sys.argv[1]))
"""

TRAIN = """
import sys, torch
torch.set_num_threads(1)
torch.manual_seed(3)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
for _ in range(40):
    x = torch.randn(64, 16)
    loss = torch.nn.functional.cross_entropy(model(x), (x[:, :4]).argmax(1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
torch.save(model.state_dict(), sys.argv[1])
print("forked" if "xml.dom.minidom" in sys.modules else "fresh")
"""


def client(*job_args: str) -> str:
    """The client's command line for ``python -m job ARGS`` (a shell word list)."""
    return " ".join([sys.executable, str(WARM_START), "run", "-m", *job_args])


def serve(cwd: Path, command: str, preload: tuple[str, ...] = (MARKER,)) -> int:
    """Run shell ``command`` beside a warm-start server started in ``cwd``; its status."""
    return subprocess.call(
        [sys.executable, str(WARM_START), "serve", "--preload", *preload, "--", "bash", "-c",
         command],
        cwd=cwd,
        env=os.environ | {"PYTHONPATH": ""},
    )  # fmt: skip


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    (tmp_path / "job.py").write_text(JOB)
    return tmp_path


def test_forked_job_gets_cwd_env_args_streams_and_status(job_dir: Path):
    status = serve(job_dir, f"JOB_VALUE=seven {client('job', '3', '--flag')} > out 2> err; "
                            "echo $? > status")  # fmt: skip
    assert status == 0
    assert (job_dir / "status").read_text().strip() == "3"
    out = (job_dir / "out").read_text().splitlines()
    assert out == [f"forked {job_dir} seven", "args ['3', '--flag']"]
    assert (job_dir / "err").read_text() == "to stderr\n"


def test_serve_returns_the_commands_status(job_dir: Path):
    assert serve(job_dir, f"JOB_VALUE=x {client('job', '0')} > /dev/null; exit 5") == 5


def test_job_exception_is_status_one_with_traceback(job_dir: Path):
    serve(job_dir, f"JOB_VALUE=x {client('job', 'raise')} > out 2> err; echo $? > status")
    assert (job_dir / "status").read_text().strip() == "1"
    assert "RuntimeError: the job failed" in (job_dir / "err").read_text()


def test_without_a_server_the_client_runs_the_job_itself(job_dir: Path):
    env = {k: v for k, v in os.environ.items() if k != "WARM_START_SOCKET"}
    done = subprocess.run(
        [sys.executable, str(WARM_START), "run", "-m", "job", "4"], cwd=job_dir,
        env=env | {"JOB_VALUE": "v", "PYTHONPATH": ""}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 4
    assert done.stdout.splitlines()[0] == f"fresh {job_dir} v"


def test_a_client_in_another_directory_is_refused_and_runs_fresh(job_dir: Path, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    (other / "job.py").write_text(JOB)
    serve(job_dir, f"cd {other} && JOB_VALUE=o {client('job', '2')} > out; echo $? > status")
    assert (other / "status").read_text().strip() == "2"
    assert (other / "out").read_text().splitlines()[0] == f"fresh {other} o"


def test_terminating_the_client_ends_the_job(job_dir: Path):
    command = (
        f"JOB_VALUE=s {client('job', 'sleep')} > out & client=$!; "
        "for i in $(seq 100); do [ -s job.pid ] && break; sleep 0.1; done; "
        "kill -TERM $client; wait $client; echo $? > status"
    )
    started = time.monotonic()
    serve(job_dir, command)
    assert time.monotonic() - started < 30
    assert (job_dir / "status").read_text().strip() == str(128 + signal.SIGTERM)
    pid = int((job_dir / "job.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (job_dir / "out").read_text().startswith("forked")


def test_forked_training_equals_a_fresh_interpreters(tmp_path: Path):
    """The same torch training in a fork of the server and in a fresh interpreter: the
    same weights to the bit (the server runs no torch operation before it forks)."""
    (tmp_path / "train.py").write_text(TRAIN)
    serve(tmp_path, f"{client('train', 'forked.pt')} > forked.out",
          preload=("torch", "torch._dynamo", MARKER))  # fmt: skip
    fresh = subprocess.run(
        [sys.executable, "-m", "train", "fresh.pt"], cwd=tmp_path, capture_output=True, text=True
    )
    assert fresh.stdout.strip() == "fresh"
    assert (tmp_path / "forked.out").read_text().strip() == "forked"
    import torch

    forked_state = torch.load(tmp_path / "forked.pt", weights_only=True)
    fresh_state = torch.load(tmp_path / "fresh.pt", weights_only=True)
    assert forked_state.keys() == fresh_state.keys()
    for name, tensor in fresh_state.items():
        assert torch.equal(forked_state[name], tensor), name


def test_analysis_jobs_fork_with_their_modules_imported(tmp_path: Path):
    """``--preload-for analysis`` (make analysis): a job's fork has the statistics, figure
    and audit jobs' modules already imported, and runs a job module as ``python -m`` does."""
    probe = "import sys; print(sorted(m for m in sys.modules if m.startswith('workflow.scripts')))"
    (tmp_path / "probe.py").write_text(probe)
    command = (f"{client('workflow.scripts.audit', '--help')} > help.out && "
               f"{client('probe')} > modules.out")  # fmt: skip
    status = subprocess.call(
        [sys.executable, str(WARM_START), "serve", "--preload-for", "analysis", "--",
         "bash", "-c", command],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(WARM_START.parents[1])},
    )  # fmt: skip
    assert status == 0
    assert "audit the study against its pre-registration" in (tmp_path / "help.out").read_text()
    modules = (tmp_path / "modules.out").read_text()
    for job in ("collect_runs", "analysis_tables", "exploratory_tables", "figures", "audit"):
        assert f"workflow.scripts.{job}" in modules, modules


def test_idle_preload_imports_the_later_jobs_modules(tmp_path: Path):
    """``--idle-preload-for analysis`` (make reproduce): the server serves jobs at once, and
    a job started a little later finds every analysis job's module imported."""
    probe = "import sys; print(sum(m.startswith('workflow.scripts.') for m in sys.modules))"
    (tmp_path / "probe.py").write_text(probe)
    loop = (f"for i in $(seq 120); do {client('probe')} > later.out; "
            "[ $(cat later.out) -ge 6 ] && break; sleep 0.5; done")  # fmt: skip
    status = subprocess.call(
        [sys.executable, str(WARM_START), "serve", "--preload", MARKER,
         "--idle-preload-for", "analysis", "--", "bash", "-c", loop],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(WARM_START.parents[1])},
    )  # fmt: skip
    assert status == 0
    assert int((tmp_path / "later.out").read_text()) == 6
