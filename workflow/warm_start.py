"""Warm starts for local jobs: import torch and the run's stage once, fork it per job.

A CPU-scale run trains and evaluates in about 40 s, and a fresh interpreter spends
about 8 s of that importing torch, its compiler stack (``torch._dynamo``, which
``torch.optim`` pulls in), pandas, pandera and lm-eval. This script keeps one
process with those modules imported and runs each job in a fork of it: the job
starts with the imports done and nothing else shared (the server runs no torch
operation, so no thread pool or generator state is inherited).

    python workflow/warm_start.py serve [--preload MODULE ... | --preload-for analysis] -- CMD ...

starts the server on a Unix socket (its imports: ``--preload``, by default the
modules of the study's run jobs, or with ``--preload-for analysis`` those of its
statistics, figure and audit jobs; ``--idle-preload-for analysis`` imports those
afterwards, while the first jobs run), runs ``CMD`` (``snakemake ...``) with
``WARM_START_SOCKET`` naming the socket, stops the server when the command ends and
exits with the command's status.

    python workflow/warm_start.py run -m MODULE ARGS ...

is the client, the launcher of the jobs: it asks the server to run
``python -m MODULE ARGS`` in a fork, with the client's working directory,
environment and standard streams (the job's log), forwards SIGINT, SIGTERM and
SIGHUP to the fork and exits with the fork's status (128 + N for signal N). With no
usable server (``WARM_START_SOCKET`` unset, the socket gone, another interpreter, a
different working directory or ``PYTHONPATH``) it replaces itself with
``python -m MODULE ARGS``: the job runs exactly as without this script.

The client imports only the standard library. A job forked from the server sees the
code as it was when the server started: the server serves one workflow invocation.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

SOCKET_ENV = "WARM_START_SOCKET"
# What the study's run jobs import (training.run_and_evaluate, at the top and on first
# use): the server's imports unless --preload names others.
RUN_JOB_MODULES = (
    "training.run_and_evaluate",
    "torch._dynamo",
    "lm_eval.evaluator",
    "pyarrow.parquet",
)
# What the statistics, figure and audit jobs import (workflow.scripts.<job>, and the
# plotting and model-fitting modules their functions import where they use them): the
# server's imports under ``--preload-for analysis`` (``make analysis``).
ANALYSIS_JOB_MODULES = (
    "workflow.scripts.collect_runs",
    "workflow.scripts.analysis_tables",
    "workflow.scripts.exploratory_tables",
    "workflow.scripts.figures",
    "workflow.scripts.exploratory_figures",
    "workflow.scripts.audit",
    "matplotlib.pyplot",
    "statsmodels.formula.api",
    "pyarrow.parquet",
)
PRELOADS = {"run": RUN_JOB_MODULES, "analysis": ANALYSIS_JOB_MODULES}
_LENGTH = struct.Struct("!Q")
_CODE = struct.Struct("!q")


def _identity() -> dict:
    """What the job's modules depend on: the interpreter, the directory, the import path."""
    return {
        "executable": sys.executable,
        "prefix": sys.prefix,
        "cwd": os.getcwd(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
    }


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


# -- the client ----------------------------------------------------------------------------


def run(module: str, args: list[str]) -> int:
    """Run ``python -m module args`` in a fork of the server, or exec it without one."""
    conn = _connect()
    if conn is None:
        _exec(module, args)
    with conn:
        request = _identity() | {"module": module, "args": args, "env": dict(os.environ)}
        payload = json.dumps(request).encode()
        socket.send_fds(conn, [_LENGTH.pack(len(payload))], [0, 1, 2])
        conn.sendall(payload)
        try:
            pid = _CODE.unpack(_recv_exact(conn, _CODE.size))[0]
        except ConnectionError:
            pid = -1
        if pid < 0:  # refused: another interpreter, directory or import path
            conn.close()
            print("warm_start: the server runs another interpreter, directory or PYTHONPATH: "
                  "a fresh interpreter", file=sys.stderr)  # fmt: skip
            _exec(module, args)

        def forward(signum, frame):
            os.kill(pid, signum)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, forward)
        try:
            return _CODE.unpack(_recv_exact(conn, _CODE.size))[0]
        except ConnectionError:
            print(f"warm_start: the server ended before job {pid} did", file=sys.stderr)
            return 1


def _connect() -> socket.socket | None:
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError as error:
        conn.close()
        print(f"warm_start: no server at {path} ({error}): a fresh interpreter", file=sys.stderr)
        return None
    return conn


def _exec(module: str, args: list[str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


# -- the server ----------------------------------------------------------------------------


def serve(listener: socket.socket, preload: list[str], idle_preload: list[str] = ()) -> None:
    """Import ``preload``, then fork a job per connection until SIGTERM; report each status.

    ``idle_preload`` is imported one module at a time while no job is asking to start,
    after the first jobs run: the modules of jobs that come later (``make reproduce``:
    the analysis jobs, after the training) without delaying the first ones. A fork is
    only ever taken between two imports, never inside one.
    """
    sys.path[0] = os.getcwd()  # the import path of ``python -m``, not this script's folder
    for name in preload:
        importlib.import_module(name)
    later = list(idle_preload)
    identity = _identity()
    jobs: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    while not stop:
        events = selector.select(timeout=0.2)
        for key, _ in events:
            if key.fileobj is listener:
                conn, _ = listener.accept()
                pid = _start_job(conn, listener, identity)
                if pid is None:
                    conn.close()
                else:
                    jobs[pid] = conn
                    selector.register(conn, selectors.EVENT_READ, pid)
            else:  # a client closed its connection before its job ended: end the job
                _kill(key.data)
        _report_ended(jobs, selector)
        if later and not events:
            _import_quietly(later.pop(0))
    for pid in jobs:
        _kill(pid)


def _import_quietly(name: str) -> None:
    """Import ``name`` for later jobs; a module that fails to import is left to the job."""
    try:
        importlib.import_module(name)
    except Exception as error:  # the job that needs it imports it, and fails, itself
        print(f"warm_start: not preloaded: {name} ({error})", file=sys.stderr)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _report_ended(jobs: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    while jobs:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn = jobs.pop(pid, None)
        if conn is None:
            continue
        selector.unregister(conn)
        code = os.waitstatus_to_exitcode(status)
        try:
            conn.sendall(_CODE.pack(128 - code if code < 0 else code))
        except OSError:
            pass
        conn.close()


def _start_job(conn: socket.socket, listener: socket.socket, identity: dict) -> int | None:
    """Read a request; fork its job (returns the pid) or refuse it (None)."""
    try:
        head, fds, _, _ = socket.recv_fds(conn, _LENGTH.size, 3)
        request = json.loads(_recv_exact(conn, _LENGTH.unpack(head)[0]))
    except (ConnectionError, ValueError, struct.error):
        return None
    if len(fds) != 3 or any(request.get(key) != value for key, value in identity.items()):
        for fd in fds:
            os.close(fd)
        conn.sendall(_CODE.pack(-1))
        return None
    pid = os.fork()
    if pid == 0:
        listener.close()
        conn.close()
        _run_job(request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(_CODE.pack(pid))
    return pid


def _run_job(request: dict, fds: list[int]) -> None:
    """In the fork: the client's streams, directory and environment, then ``-m module``."""
    import runpy
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["module"], *request["args"]]
    sys.modules.pop(request["module"], None)  # run afresh as __main__, as ``python -m`` does
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve_while(command: list[str], preload: list[str], idle_preload: list[str] = ()) -> int:
    """Start the server, run ``command`` with ``WARM_START_SOCKET`` set, stop the server."""
    with tempfile.TemporaryDirectory(prefix="warm_start.") as tmp:
        path = str(Path(tmp) / "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(64)
        server = os.fork()
        if server == 0:
            code = 0
            try:
                serve(listener, preload, idle_preload)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        listener.close()
        try:
            return subprocess.call(command, env=os.environ | {SOCKET_ENV: path})
        finally:
            os.kill(server, signal.SIGTERM)
            os.waitpid(server, 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # read by hand: the job's own options follow -m MODULE
        if len(argv) < 3 or argv[1] != "-m":
            print("usage: warm_start.py run -m MODULE [ARGS ...]", file=sys.stderr)
            return 2
        return run(argv[2], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    serve_parser = sub.add_parser("serve", help="run COMMAND with a warm-start server")
    serve_parser.add_argument(
        "--preload", nargs="*", default=None,
        help="modules to import once (default: those of the jobs --preload-for names)",
    )  # fmt: skip
    serve_parser.add_argument(
        "--preload-for", choices=sorted(PRELOADS), default="run",
        help="whose modules to import: the study's run jobs (default) or its analysis jobs",
    )  # fmt: skip
    serve_parser.add_argument(
        "--idle-preload-for", choices=sorted(PRELOADS), default=None,
        help="whose modules to import afterwards, one at a time while no job is starting",
    )  # fmt: skip
    serve_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    sub.add_parser("run", help="run -m MODULE ARGS in a fork of the server")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("serve: give the command to run after --")
    preload = list(PRELOADS[args.preload_for]) if args.preload is None else args.preload
    idle = [m for m in PRELOADS.get(args.idle_preload_for, ()) if m not in preload]
    return serve_while(command, preload, idle)


if __name__ == "__main__":
    raise SystemExit(main())
