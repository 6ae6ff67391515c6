"""Command line: `pruneofa STAGE [RECIPE] [key=value ...]` and the tools around the stages."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print("pruneofa: under construction", file=sys.stderr)
    return 2
