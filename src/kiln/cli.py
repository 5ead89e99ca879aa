"""The `kiln` command.

What lives here: the command-line entry point and its subcommands: `kiln info` (versions and
the device kiln would train on, for bug reports and set-up checks), and `kiln fit`,
`kiln predict` and `kiln evaluate`, which train a model on a CSV or Parquet table with no code
and use the run directory it leaves. What does not: the work behind them (`tables/`).

Expected failures (a bad table, a missing file, a bad option) are printed as one line,
`kiln: error: ...`, with exit status 2; `--traceback` shows the whole trace instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help with the options' defaults shown, and the description and examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = not any(action.default is hidden for hidden in (None, False, argparse.SUPPRESS))
        if shown and action.option_strings and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _paragraphs(*texts: str) -> str:
    """Wrap each paragraph of a description (the raw formatter keeps the examples' lines)."""
    return "\n\n".join(textwrap.fill(text, 79) for text in texts)


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


def _kinds(pairs: Sequence[str] | None) -> dict[str, str]:
    from kiln.tables.read import TableError

    kinds = {}
    for pair in pairs or []:
        name, sep, kind = pair.partition("=")
        if not sep or not name or not kind:
            raise TableError(
                f"--kind takes COLUMN=KIND, such as --kind zip=categorical; received {pair!r}."
            )
        kinds[name] = kind
    return kinds


def _fit(args: argparse.Namespace) -> int:
    from kiln.tables.metrics import format_metrics
    from kiln.tables.read import read_table
    from kiln.tables.train import TableOptions, train_table

    options = TableOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=tuple(args.hidden),
        members=args.members,
        bins=args.bins,
        drop=args.drop,
        val=args.val,
        seed=args.seed,
        device=args.device,
        kinds=_kinds(args.kind),
        ignore=tuple(args.ignore or ()),
    )
    table = read_table(args.data)
    out = Path(args.out) if args.out else Path("runs") / Path(args.data).stem
    if not args.quiet:
        print(f"Training into {out}; to stop early, create the file ./stop_{out.name}")
    summary = train_table(
        table, list(args.target), out, options, resume=args.resume, progress=not args.quiet
    )
    rows = summary["rows"]
    print(
        f"\nTrained {summary['epochs']} epochs on {rows['train']} rows, validated on "
        f"{rows['val']}"
        + (f" ({rows['dropped']} rows without targets left out)" if rows["dropped"] else "")
        + "."
    )
    if summary["stopped"]:
        print(f"Stopped: {summary['stopped']}")
    print(format_metrics(summary["metrics"]))
    print(f"\nRun directory {out}:")
    for what, path in summary["files"].items():
        print(f"  {what:<6} {path}")
    print(f"Predict with: kiln predict {out} DATA -o predictions.csv")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from kiln.tables.metrics import write_csv
    from kiln.tables.read import read_table
    from kiln.tables.train import predict_table

    columns = predict_table(args.run, read_table(args.data), args.device)
    write_csv(columns, args.output)
    if args.output != "-":
        rows = len(next(iter(columns.values())))
        print(f"Wrote {rows} predictions ({', '.join(columns)}) to {args.output}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from kiln.tables.metrics import format_metrics
    from kiln.tables.read import read_table
    from kiln.tables.train import evaluate_table

    metrics = evaluate_table(args.run, read_table(args.data), args.device)
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(format_metrics({Path(args.data).name: metrics}))
    return 0


def _add_fit(commands: Any) -> None:
    fit = commands.add_parser(
        "fit",
        help="train a model on a CSV or Parquet table, with no code",
        formatter_class=_Formatter,
        description=_paragraphs(
            "Train a network to predict the --target column(s) from the other columns of a "
            "table, and write a run directory with everything needed to predict.",
            "Numeric columns are centred on the median and robustly scaled (missing values: "
            "the training median, plus a missing-indicator input); text columns and whole "
            "numbers with at most 10 distinct values are categories (one-hot up to 16 slots, "
            "an embedding beyond). A target is regression (numbers), binary (two values, any "
            "labels) or multiclass (text, or at most 10 whole numbers).",
            "The network and its training follow the 'Better by default' MLP (RealMLP): "
            "robustly scaled, smoothly clipped numbers with periodic embeddings (and "
            "piecewise-linear ones for regression), a learnable "
            "scale per input, two networks of three hidden layers side by side whose outputs "
            "are averaged, smoothed labels, a learning rate in four lengthening cycles over a "
            "number of epochs set by the table's size, and the best "
            "weights of each cycle, by the validation loss, averaged where that lowers it "
            "(docs/guides/cli.md). To stop early, create the file ./stop_RUNNAME.",
        ),
        epilog="examples:\n"
        "  kiln fit houses.csv --target price\n"
        "  kiln fit patients.csv --target outcome --target cost --hidden 128 64 --epochs 200\n"
        "  kiln fit patients.csv --target outcome --ignore id --kind zip=categorical\n"
        "  kiln fit houses.csv --target price --out runs/houses --resume   # continue a run",
    )
    fit.add_argument("data", help="the training table: a .csv file, or .parquet with pyarrow")
    fit.add_argument(
        "--target",
        "-t",
        action="append",
        required=True,
        metavar="COLUMN",
        help="a column to predict (repeat for several)",
    )
    fit.add_argument(
        "--out",
        "-o",
        metavar="RUN",
        help="the run directory (default: runs/<data file name without suffix>)",
    )
    fit.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="the epochs to train (default: 256 for up to 2,000 rows, fewer for larger tables)",
    )
    fit.add_argument("--batch-size", type=int, default=256, help="rows per batch")
    fit.add_argument(
        "--lr",
        type=float,
        default=None,
        help="the peak learning rate (default: 0.04 with a classification target, else 0.2)",
    )
    fit.add_argument(
        "--hidden",
        type=int,
        nargs="*",
        default=[160, 160, 160],
        metavar="WIDTH",
        help="hidden layer widths of each member (none: a linear model)",
    )
    fit.add_argument(
        "--members",
        type=int,
        default=2,
        help="networks trained side by side on the same rows, their outputs averaged",
    )
    fit.add_argument(
        "--bins",
        type=int,
        default=None,
        help="bins of each numeric column's piecewise-linear embedding, between its training "
        "quantiles, which lets one column carry a step (default: 16 when every target is "
        "regression, else 0: none)",
    )
    fit.add_argument(
        "--drop",
        type=float,
        default=0.15,
        help="dropout after each hidden layer, for the first half of training (then it fades)",
    )
    fit.add_argument(
        "--val",
        type=float,
        default=0.2,
        help="the fraction of rows held out for validation (the same rows for the same --seed)",
    )
    fit.add_argument("--seed", type=int, default=0, help="the seed of the split and the model")
    fit.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    fit.add_argument(
        "--kind",
        action="append",
        metavar="COLUMN=KIND",
        help="override a "
        "column's kind: numeric or categorical for features, regression, binary or "
        "multiclass for targets (repeatable)",
    )
    fit.add_argument(
        "--ignore",
        action="append",
        metavar="COLUMN",
        help="a column to leave out, such as an identifier (repeatable)",
    )
    fit.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out where it "
        "stopped (its saved columns and options; --epochs is the total)",
    )
    fit.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _add_use(commands: Any) -> None:
    predict = commands.add_parser(
        "predict",
        help="predict with a run directory from `kiln fit`",
        formatter_class=_Formatter,
        description=_paragraphs(
            "Write predictions for every row of a table, in the original label space: numbers "
            "for regression targets, labels for classification targets plus one probability "
            "column per label (TARGET_proba_LABEL).",
            "The table needs the training feature columns; target and ignored columns may be "
            "present and are not used. Other columns are an error, which names them.",
        ),
        epilog="example:\n  kiln predict runs/houses new_houses.csv -o predictions.csv",
    )
    predict.add_argument("run", help="the run directory written by `kiln fit`")
    predict.add_argument("data", help="the table to predict: .csv, or .parquet with pyarrow")
    predict.add_argument(
        "--output", "-o", default="-", help="the CSV file to write ('-': standard output)"
    )
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    evaluate = commands.add_parser(
        "evaluate",
        help="measure a run directory from `kiln fit` on a table with the targets",
        formatter_class=_Formatter,
        description=_paragraphs(
            "Print each target's metrics on a table that holds the target columns: RMSE, MAE "
            "and R² for regression; accuracy, log loss (and ROC AUC for binary targets) for "
            "classification. Rows where a target is missing are left out of its metrics.",
        ),
        epilog="example:\n  kiln evaluate runs/houses test.csv",
    )
    evaluate.add_argument("run", help="the run directory written by `kiln fit`")
    evaluate.add_argument("data", help="the table, with the target columns")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the `kiln` command.

    Example:
        >>> build_parser().parse_args(["fit", "data.csv", "--target", "y"]).batch_size
        256
    """
    from kiln import __version__

    parser = argparse.ArgumentParser(
        prog="kiln",
        formatter_class=_Formatter,
        description="kiln trains PyTorch models: fast, exact, resumable.",
        epilog="examples:\n"
        "  kiln fit data.csv --target label          # train on a table, no code\n"
        "  kiln predict runs/data new.csv -o predictions.csv\n"
        "  kiln evaluate runs/data test.csv\n"
        "  kiln info                                 # versions and device\n\n"
        "`kiln COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback of an error instead of one line",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "info",
        help="show the versions and the device kiln would train on",
        description="Show kiln's, Python's, torch's and NumPy's versions and the device that "
        "device='auto' picks on this machine.",
    )
    _add_fit(commands)
    _add_use(commands)
    return parser


_COMMANDS = {"info": lambda args: _info(), "fit": _fit, "predict": _predict, "evaluate": _evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `kiln` command with `argv` (default: the process arguments); return its status.

    Run as the program (`argv` None), it ends by sparing the process the interpreter's last
    garbage collection (`_skip_last_collection`).

    Example:
        >>> main(["fit", "no-such-file.csv", "--target", "y"])
        2
    """
    try:
        return _run(argv)
    finally:
        if argv is None:
            _skip_last_collection()


def _skip_last_collection() -> None:
    """Freeze every object, so that the collection at the interpreter's exit skips them.

    At exit Python walks every object once more for reference cycles; with torch imported
    that walk took about 1 s of a `kiln fit` process on the development machine (5.3 s
    before, 4.2 s after). The process ends right after and its memory goes back to the system
    either way; finalizers, `atexit` handlers and the flushing of files still run.
    """
    gc.freeze()


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(_COMMANDS[args.command](args))
    except (ValueError, OSError) as error:  # TableError is a ValueError
        if args.traceback:
            raise
        lines = (line.strip() for line in str(error).splitlines())
        print(f"kiln: error: {' '.join(line for line in lines if line)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
