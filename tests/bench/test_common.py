"""Tests of bench/common.py: what the benchmarks share (rounds, ratios, verdicts, the report)."""

from __future__ import annotations

from pathlib import Path

import common
import pytest
import torch


def test_interleave_reverses_each_group_on_odd_rounds_and_keeps_the_groups_order() -> None:
    calls: list[str] = []
    announced: list[tuple[int, str]] = []

    def run(name: str) -> int:
        calls.append(name)
        return len(calls)

    results = common.interleave(
        run, [("a", "b"), ("c", "d")], 3, lambda i, name: announced.append((i, name))
    )
    assert calls == ["a", "b", "c", "d", "b", "a", "d", "c", "a", "b", "c", "d"]
    assert results == {"a": [1, 6, 9], "b": [2, 5, 10], "c": [3, 8, 11], "d": [4, 7, 12]}
    assert announced[4] == (1, "b")


def test_ratio_cells_give_the_median_range_target_and_verdict() -> None:
    values = common.ratios([1.2, 2.0, 3.3], [1.0, 2.0, 3.0])
    assert values == pytest.approx([1.2, 1.0, 1.1])
    assert common.ratio_cells(values, 1.05) == ["1.100x", "1.00-1.20x", "<= 1.05x", "FAIL"]
    assert common.ratio_cells(values, None)[2:] == ["-", "reference"]
    assert common.verdict(1.05, 1.05) == "pass"
    assert common.markdown_row(["a", 64, "1.0x"]) == "| a | 64 | 1.0x |"


def test_timed_returns_the_seconds_of_the_call() -> None:
    seconds = common.timed(lambda: sum(range(1000)))
    assert 0.0 < seconds < 1.0


def test_busy_meter_reports_the_load_of_other_processes() -> None:
    seconds, others = common.BusyMeter().stop()
    assert seconds >= 0.0
    if Path("/proc/stat").exists():
        assert others is not None
        assert others >= 0.0
        assert common.load_sentence(0.5) == " Other processes kept 0.50 cores busy meanwhile."
    assert common.load_sentence(None) == ""


def test_machine_names_the_cores_torch_and_its_threads() -> None:
    text = common.machine()
    threads = torch.get_num_threads()
    assert f"torch {torch.__version__} ({threads} thread" in text
    assert "Python " in text


def test_parser_and_publish_handle_the_shared_options(tmp_path: Path, capsys) -> None:
    args = common.parser("Bench.", "small", "rounds").parse_args(
        ["--quick", "--rounds", "4", "--markdown", str(tmp_path / "r.md")]
    )
    assert (args.quick, args.rounds) == (True, 4)
    common.publish("| table |\n", args.markdown)
    assert capsys.readouterr().out == "| table |\n\n"
    assert (tmp_path / "r.md").read_text() == "| table |\n"
