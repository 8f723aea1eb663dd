"""The audit's result and its two written forms, ``audit.json`` and ``audit.md``.

An audit is a list of checks. Each check lists its failures (undeclared
differences or unreadable files), the differences a deviation declares (which do
not fail it), and notes. The audit passes when no check has a failure.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


class AuditError(RuntimeError):
    """The study does not match its pre-registration (the message lists why)."""


@dataclass
class Check:
    name: str  # short identifier, e.g. "lock"
    title: str  # what the check asserts, in words
    failures: list[str] = field(default_factory=list)
    declared: list[str] = field(default_factory=list)  # differences covered by a deviation
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def declare(self, message: str, deviation_id: str) -> None:
        self.declared.append(f"{message} [declared: {deviation_id}]")


@dataclass
class AuditResult:
    scale: str
    plan: str
    deviations_file: str
    plan_sha256: str | None = None
    lock_sha256: str | None = None
    locked_at: str | None = None
    checks: list[Check] = field(default_factory=list)
    deviations: list[str] = field(default_factory=list)  # summaries of the log's entries

    def add(self, name: str, title: str) -> Check:
        check = Check(name, title)
        self.checks.append(check)
        return check

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return [f"[{c.name}] {f}" for c in self.checks for f in c.failures]

    def raise_if_failed(self) -> None:
        """Raise ``AuditError`` listing every failure (for Snakemake scripts)."""
        if not self.passed:
            listed = "\n  ".join(self.failures)
            raise AuditError(f"audit failed ({len(self.failures)} problem(s)):\n  {listed}")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["passed"] = self.passed
        for check, obj in zip(out["checks"], self.checks, strict=True):
            check["passed"] = obj.passed
        return out

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.failures)} problem(s))"
        lines = [
            "# Audit of the study against its pre-registration",
            "",
            f"**Result: {verdict}**",
            "",
            f"- Scale: `{self.scale}`",
            f"- Plan: `{self.plan}` (sha256 `{self.plan_sha256}`)",
            f"- Lock: sha256 `{self.lock_sha256}`, locked at {self.locked_at}",
            f"- Deviations log: `{self.deviations_file}` ({len(self.deviations)} entries)",
            "",
            "| check | result | declared differences |",
            "|---|---|---|",
        ]
        for c in self.checks:
            result = "pass" if c.passed else f"**FAIL** ({len(c.failures)})"
            lines.append(f"| {c.title} | {result} | {len(c.declared)} |")
        sections = [
            ("Failures", [f"{c.title}: {f}" for c in self.checks for f in c.failures]),
            ("Declared differences", [f"{c.title}: {d}" for c in self.checks for d in c.declared]),
            ("Deviations log", self.deviations),
            ("Notes", [f"{c.title}: {n}" for c in self.checks for n in c.notes]),
        ]
        for heading, items in sections:
            if items:
                lines += ["", f"## {heading}", ""] + [f"- {item}" for item in items]
        return "\n".join(lines) + "\n"

    def write(self, results: str | Path) -> tuple[Path, Path]:
        """Write ``<results>/audit.md`` and ``<results>/audit.json``."""
        results = Path(results)
        results.mkdir(parents=True, exist_ok=True)
        md, js = results / "audit.md", results / "audit.json"
        md.write_text(self.to_markdown())
        js.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return md, js
