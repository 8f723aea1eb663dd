"""gradnoise stands alone: its wheel installs beside torch and numpy only, and its README runs.

In a fresh virtual environment holding only torch and numpy (the versions the study
pins), the wheel built from ``gradnoise/`` installs without dependencies, every
module outside ``gradnoise.integrations`` (whose frameworks are optional extras)
imports without loading a package of the study, the declared requirements are
exactly torch and numpy (extras aside), and the ``python`` blocks of
``gradnoise/README.md`` (quick start, attach, selfcheck) run to their end as one script:
a finite, positive integrated P-NE, an attach run with records, a passing selfcheck.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "gradnoise"
STUDY = ("preregistration", "training", "analysis", "figures", "workflow")
PRINTED = re.compile(r"^integrated P-NE (\S+) \(effective (\S+)\)$", re.MULTILINE)

pytestmark = pytest.mark.slow

PROBE = """
import importlib, importlib.metadata, json, pkgutil, sys
import gradnoise
names = sorted(
    m.name for m in pkgutil.walk_packages(gradnoise.__path__, "gradnoise.")
    if not m.name.startswith("gradnoise.integrations")
)
for name in names:
    importlib.import_module(name)
requires = importlib.metadata.requires("gradnoise") or []
print(json.dumps({
    "file": gradnoise.__file__,
    "modules": names,
    "loaded_study": sorted({m.split(".")[0] for m in sys.modules} & set(STUDY)),
    "requires": [r for r in requires if "extra ==" not in r],
}))
"""


def pinned(name: str) -> str:
    """``name==version`` as requirements.txt pins it."""
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.split("==")[0].strip().lower() == name:
            return line.strip()
    raise AssertionError(f"requirements.txt pins no {name}")


def readme_example() -> str:
    """Every ```python block of gradnoise/README.md, in order: one script (quick start, attach,
    selfcheck), so each section's code runs on the first one's model and data."""
    text = (PACKAGE / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert blocks, "gradnoise/README.md has no ```python block"
    return "\n".join(blocks)


def run(args: list, cwd: Path, env: dict, timeout: float = 600) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_wheel_installs_with_torch_and_numpy_only_and_the_readme_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # build from a copy, so setuptools' build/ and egg-info stay out of the working tree
    source = tmp_path / "src"
    shutil.copytree(
        PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    dist = tmp_path / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", source,
         "-w", dist],
        tmp_path, env,
    )  # fmt: skip
    (wheel,) = dist.glob("gradnoise-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path, env)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", pinned("torch"), pinned("numpy")], tmp_path, env)
    run([python, "-m", "pip", "install", "--no-deps", wheel], tmp_path, env)

    work = tmp_path / "work"  # not the repository: the study is not importable from here
    work.mkdir()
    probe = json.loads(run([python, "-c", f"STUDY = {STUDY!r}\n{PROBE}"], work, env))
    assert Path(probe["file"]).is_relative_to(venv), f"gradnoise imported from {probe['file']}"
    assert {"gradnoise.selfcheck", "gradnoise.estimation.logger"} <= set(probe["modules"])
    assert probe["loaded_study"] == [], f"gradnoise loaded study packages {probe['loaded_study']}"
    names = sorted(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in probe["requires"])
    assert names == ["numpy", "torch"], f"gradnoise requires {probe['requires']}"

    example = work / "readme_example.py"
    example.write_text(readme_example())
    out = run([python, example], work, env, timeout=300)
    found = PRINTED.search(out)
    assert found, f"the README example did not print its integrated P-NE:\n{out}"
    potential, effective = float(found.group(1)), float(found.group(2))
    assert math.isfinite(potential) and potential > 0, out
    assert 0 < effective <= potential, out  # clipping scales the noise by c^2 <= 1
    tapped = re.search(r"^attach: (\d+) steps, (\d+) records$", out, re.MULTILINE)
    assert tapped and int(tapped.group(2)) > 0, f"the attach example logged nothing:\n{out}"
