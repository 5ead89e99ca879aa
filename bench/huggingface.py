"""Time a tiny GPT-2 (`transformers`) trained through kiln against a hand-written loop.

What: the time of one epoch of `kiln.Trainer.fit` on a two-layer GPT-2 of width 32 (random
weights, built from a config: nothing is downloaded), divided by the time of the same epoch
through the loop a careful user writes for a Hugging Face model, over the same batches in the
same order. `bench/overhead.py` prints it as a row of its table; `python bench/huggingface.py`
times this row alone (`--quick`, `--rounds N`, `--markdown PATH` as there).

The batches are dicts of in-memory tensors (`input_ids`, `attention_mask`, `labels`), built
once and handed out in order by `DataLoader(batches, batch_size=None)`, which both contenders
iterate. The hand loop does per epoch::

    for batch in batches:
        opt.zero_grad(set_to_none=True)
        out = model(**batch)
        out.loss.backward()
        opt.step()
        losses.append(out.loss.detach())
    epoch_loss = float(torch.stack(losses).mean())  # no host sync per step

kiln's contender is `Trainer(model, optimizer="adam", lr=1e-3, device="cpu", progress=False)`
with no `loss=`: it calls `model(**batch)` and trains on the loss the model returns. kiln's
"adam" is torch's foreach Adam on the CPU (the same update bit for bit as the default Adam), so
the hand loop gets `Adam(lr=1e-3, foreach=True)` too: the ratio compares the loops, not two
implementations of Adam. Dropout is off, so both do the same arithmetic (the tests check that
their losses agree). Both models start from the same seed.

What lives here: the model, the batches and the two contenders. What does not: the rounds,
ratios and report (`common.py`), and the rest of the overhead table (`overhead.py`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any

import torch
from common import (
    BusyMeter,
    interleave,
    load_sentence,
    machine,
    markdown_row,
    parser,
    publish,
    ratio_cells,
    ratios,
    timed,
)
from contenders import SEED, Epoch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

import kiln

#: The optional package this benchmark needs.
NEEDS = "transformers"
LABEL = "kiln `fit`, tiny GPT-2 (`transformers`) vs hand loop, same batches"
TARGET = 1.05
BATCH_SIZE, LENGTH, VOCAB = 16, 32, 128


@dataclass(frozen=True)
class Config:
    """How much to measure."""

    steps: int  # batches per epoch
    rounds: int
    warmup: int  # untimed epochs per contender before the first round


FULL = Config(steps=200, rounds=7, warmup=2)
QUICK = Config(steps=10, rounds=3, warmup=1)


def make_model() -> Any:
    """Return a two-layer GPT-2 of width 32, dropout off, the same weights at every call."""
    import transformers

    transformers.logging.set_verbosity_error()  # its note on `loss_type=None` is noise here
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=LENGTH,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    torch.manual_seed(SEED)
    return transformers.AutoModelForCausalLM.from_config(config)


def make_batches(steps: int) -> list[dict[str, Tensor]]:
    """Return `steps` batches of `BATCH_SIZE` random sequences; the last 4 labels are -100."""
    generator = torch.Generator().manual_seed(SEED)
    batches = []
    for _ in range(steps):
        ids = torch.randint(1, VOCAB, (BATCH_SIZE, LENGTH), generator=generator)
        labels = ids.clone()
        labels[:, -4:] = -100  # padding, left out of the loss
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return batches


class Batches(Dataset[dict[str, Tensor]]):
    """The batches, as a dataset whose items are whole batches (for `batch_size=None`)."""

    def __init__(self, batches: list[dict[str, Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.batches[index]


def batch_loader(batches: list[dict[str, Tensor]]) -> DataLoader[dict[str, Tensor]]:
    """Return a DataLoader that hands out `batches` as they are, in order."""
    return DataLoader(Batches(batches), batch_size=None)


def hand_loop(batches: DataLoader[dict[str, Tensor]], losses: list[float] | None = None) -> Epoch:
    """Return the hand-written loop over `batches` (its epoch losses go to `losses`, if given)."""
    model = make_model()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)

    def epoch() -> None:
        step_losses = []
        for batch in batches:
            opt.zero_grad(set_to_none=True)
            out = model(**batch)
            out.loss.backward()
            opt.step()
            step_losses.append(out.loss.detach())
        loss = float(torch.stack(step_losses).mean())  # the epoch's loss, read once
        if losses is not None:
            losses.append(loss)

    return epoch


def kiln_fit(batches: DataLoader[dict[str, Tensor]], losses: list[float] | None = None) -> Epoch:
    """Return one epoch of `kiln.Trainer.fit` on `batches`: a `fit(epochs=1)` call per epoch."""
    trainer = kiln.Trainer(make_model(), optimizer="adam", lr=1e-3, device="cpu", progress=False)

    def epoch() -> None:
        history = trainer.fit(batches, epochs=1)
        if losses is not None:
            losses.append(history.epochs[-1]["loss"])

    return epoch


def measure(config: Config) -> list[float]:
    """Return the per-round ratios of kiln's epoch to the hand loop's, timed interleaved."""
    batches = batch_loader(make_batches(config.steps))
    epochs = {"hand": hand_loop(batches), "kiln": kiln_fit(batches)}
    print(f"  tiny GPT-2, {config.steps} steps: {config.rounds} rounds", file=sys.stderr)
    for _ in range(config.warmup):
        for epoch in epochs.values():
            epoch()
    times = interleave(lambda name: timed(epochs[name]), [list(epochs)], config.rounds)
    return ratios(times["kiln"], times["hand"])


#: The head of `bench/overhead.py`'s table, whose format this row's line follows.
HEADER = (
    "| Row | Batch size | Median ratio | Range (min-max) | Target | Result |\n"
    "|---|---:|---:|---:|---:|---|"
)


def line(values: list[float]) -> str:
    """Return the table's line for this row, from its per-round ratios."""
    return markdown_row([LABEL, BATCH_SIZE, *ratio_cells(values, TARGET)])


def main(argv: list[str] | None = None) -> int:
    """Time this row alone and print it as a Markdown table, as `bench/overhead.py` does."""
    arguments = parser(__doc__.splitlines()[0], "a tiny version that takes seconds", "timed rounds")
    args = arguments.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.rounds:
        config = replace(config, rounds=args.rounds)
    torch.set_num_threads(1)
    meter = BusyMeter()
    values = measure(config)
    seconds, others = meter.stop()
    options = (" --quick" if args.quick else "") + (
        f" --rounds {args.rounds}" if args.rounds else ""
    )
    publish(
        f"{HEADER}\n{line(values)}\n\n"
        f"Machine: {machine()}.\n"
        f"Workload: {config.steps} batches of {BATCH_SIZE} sequences of {LENGTH} tokens per "
        f"epoch; median of {config.rounds} interleaved rounds after {config.warmup} warm-up "
        f"epoch(s). The benchmark took {seconds:.0f} s.{load_sentence(others)}\n"
        f"Reproduce: `python bench/huggingface.py{options}`\n",
        args.markdown,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
