"""Command line of the pre-registration.

python -m preregistration render   # write preregistration/plan.md from plan.yaml
python -m preregistration check    # plan.md agrees with plan.yaml
python -m preregistration lock [--config config/config.yaml]
python -m preregistration hash     # print the plan's SHA-256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preregistration.lock import lock_from_config
from preregistration.plan import DEFAULT_PLAN, PlanError, load_plan, plan_hash
from preregistration.plan_doc import check_markdown, write_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preregistration", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("render", "write plan.md from plan.yaml"),
        ("check", "plan.md agrees with plan.yaml"),
        ("hash", "print the plan's SHA-256"),
    ]:
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--plan", default=str(DEFAULT_PLAN), help="plan YAML (default %(default)s)"
        )
    lock = sub.add_parser("lock", help="write the lock (refused once confirmatory traces exist)")
    lock.add_argument(
        "--config", default="config/config.yaml", help="config YAML (default %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            print(f"wrote {write_markdown(args.plan)}")
        elif args.command == "check":
            problems = check_markdown(args.plan)
            if problems:
                print("\n".join(problems), file=sys.stderr)
                return 1
            print(f"{Path(args.plan).with_suffix('.md')} agrees with {args.plan}")
        elif args.command == "hash":
            load_plan(args.plan)
            print(plan_hash(args.plan))
        else:
            print(lock_from_config(args.config))
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
