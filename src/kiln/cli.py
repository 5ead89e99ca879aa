"""The `kiln` command.

What lives here: the command-line entry point and its subcommands. Today: `kiln info`, which
reports the versions and the device kiln would train on, for bug reports and set-up checks.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence


def _info() -> int:
    import numpy
    import torch

    import kiln
    from kiln.devices import resolve_device

    rows = {
        "kiln": kiln.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device (auto)": str(resolve_device("auto")),
        "cuda devices": str(torch.cuda.device_count() if torch.cuda.is_available() else 0),
        "cpu threads": str(torch.get_num_threads()),
    }
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the `kiln` command."""
    from kiln import __version__

    parser = argparse.ArgumentParser(
        prog="kiln", description="kiln trains PyTorch models: fast, exact, resumable."
    )
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "info",
        help="show the versions and the device kiln would train on",
        description="Show kiln's, Python's, torch's and NumPy's versions and the device that "
        "device='auto' picks on this machine.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `kiln` command with `argv` (default: the process arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
