"""Job of rule audit: audit the study against its pre-registration (analysis.audit.checks).

python -m workflow.scripts.audit --config-json JSON
"""

from __future__ import annotations

import argparse
import json
import sys

from analysis.audit.checks import run_audit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", required=True, help="the resolved study config")
    args = parser.parse_args(argv)
    result = run_audit(json.loads(args.config_json))
    for failure in result.failures:
        print(failure, file=sys.stderr)
    result.raise_if_failed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
