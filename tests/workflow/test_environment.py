"""requirements.txt and environment.yml pin the same packages at the same versions."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def pins_from_lines(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_environment_yml_matches_requirements():
    requirements = pins_from_lines((REPO / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins_from_lines(pip_block) == requirements


def test_torch_is_pinned_exactly():
    requirements = pins_from_lines((REPO / "requirements.txt").read_text().splitlines())
    assert requirements["torch"] == "2.13.0"
