"""``python -m imdsfs.emulator``: the same as ``imdsfs emulate``."""

from __future__ import annotations

import argparse
import sys

from . import _command


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m imdsfs.emulator")
    _command.add_arguments(parser)
    return _command.run(parser.parse_args(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
