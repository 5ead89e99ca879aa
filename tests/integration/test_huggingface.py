"""Hugging Face models train as they are: `model(**batch)`, their own loss, their logits in metrics.

Models are built from small configs with random weights and data in memory: nothing is
downloaded. The code paths are those of a downloaded model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import kiln
from kiln.loop.step_methods import is_causal_lm, metric_inputs
from tests.distributed.group import run_forked
from tests.helpers import CrashAtStep, SimulatedCrashError

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")

VOCAB = 100


def gpt2(dropout: float = 0.1) -> Any:
    """A two-layer GPT-2 of width 32, random weights, seeded."""
    config = transformers.GPT2Config(
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config)


def bert_config() -> Any:
    """A two-layer BERT of width 32 for 2 classes."""
    return transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=32,
        num_labels=2,
        pad_token_id=0,
    )


def bert() -> Any:
    torch.manual_seed(0)
    return transformers.AutoModelForSequenceClassification.from_config(bert_config())


def lm_dataset(samples: int = 64, length: int = 16) -> Any:
    """Token sequences where every odd token follows from the one before; the tail is -100."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (samples, length), generator=generator)
    ids[:, 1::2] = (ids[:, ::2] + 1) % VOCAB
    labels = ids.clone()
    labels[:, length - 3 :] = -100  # padding, left out of the loss and the accuracy
    return datasets.Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": torch.ones_like(ids).tolist(),
            "labels": labels.tolist(),
        }
    ).with_format("torch")


def tokenizer() -> Any:
    """A word-level tokenizer built in memory ("w3" is token 3; 0 pads, 1 is unknown)."""
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    model = tokenizers.models.WordLevel(vocab, unk_token="[UNK]")
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]"
    )


def classification_dataset(samples: int = 96) -> Any:
    """Texts of different lengths, tokenized; the class is whether "w2" appears in the text."""
    generator = torch.Generator().manual_seed(2)
    texts, labels = [], []
    for index in range(samples):
        length = int(torch.randint(3, 12, (), generator=generator))
        words = torch.randint(3, VOCAB, (length,), generator=generator)
        label = index % 2
        if label:
            words[int(torch.randint(0, length, (), generator=generator))] = 2
        texts.append(" ".join(f"w{int(word)}" for word in words))
        labels.append(label)
    raw = datasets.Dataset.from_dict({"text": texts, "label": labels})
    tokens = raw.map(lambda rows: tokenizer()(rows["text"]), batched=True)
    return tokens.remove_columns(["text"])


def test_import_kiln_imports_neither_transformers_nor_datasets() -> None:
    code = "import sys, kiln; print('transformers' in sys.modules, 'datasets' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["False", "False"]


def test_causal_lm_trains_on_a_datasets_dataset_and_its_accuracy_is_shifted() -> None:
    """The loss falls; accuracy compares position t's logits with token t+1, -100 left out."""
    data = lm_dataset()
    trainer = kiln.Trainer(
        gpt2(), optimizer="adamw", lr=3e-3, metrics=["accuracy"], device="cpu", progress=False
    )
    history = trainer.fit(data, val=data.select(range(16)), epochs=4, batch_size=16)
    losses = [row["loss"] for row in history.epochs]
    assert losses[-1] < losses[0] - 0.2
    assert history.epochs[-1]["val_accuracy"] > 0.1

    batch = data[:16]
    with torch.no_grad():
        trainer.model.eval()
        logits = trainer.model(**batch).logits
    labels = batch["labels"]
    predicted, shifted = logits[:, :-1].argmax(-1), labels[:, 1:]
    counted = shifted != -100
    by_hand = (predicted == shifted)[counted].float().mean().item()
    unshifted = (logits.argmax(-1) == labels)[labels != -100].float().mean().item()
    evaluation = trainer.evaluate(data.select(range(16)), batch_size=16)
    assert evaluation["accuracy"] == pytest.approx(by_hand, abs=1e-6)
    assert by_hand != pytest.approx(unshifted, abs=1e-3)  # the counter-check: shifting matters
    predictions = trainer.predict(data.select(range(4)))
    assert predictions.shape == (4, 16, VOCAB)  # the logits, not the whole ModelOutput


def test_sequence_classification_with_a_padding_collator_learns() -> None:
    """Texts of several lengths padded per batch by the user's collator; the loss falls."""
    data = classification_dataset()
    collator = transformers.DataCollatorWithPadding(tokenizer())
    train = kiln.loader(data, batch_size=16, shuffle=True, collate_fn=collator)
    val = kiln.loader(data.select(range(32)), batch_size=16, collate_fn=collator)
    trainer = kiln.Trainer(
        bert(), optimizer="adamw", lr=3e-3, metrics=["accuracy"], device="cpu", progress=False
    )
    history = trainer.fit(train, val=val, epochs=6)
    losses = [row["loss"] for row in history.epochs]
    assert losses[-1] < losses[0] - 0.1
    assert history.epochs[-1]["val_accuracy"] >= 0.75


def test_an_unformatted_dataset_is_read_as_tensors_and_split_for_validation() -> None:
    """A `datasets.Dataset` with no format gets the torch one; `val=0.25` holds out a part."""
    rows = lm_dataset(32)[:]
    data = datasets.Dataset.from_dict({key: value.tolist() for key, value in rows.items()})
    trainer = kiln.Trainer(gpt2(), optimizer="adamw", device="cpu", progress=False)
    history = trainer.fit(data, val=0.25, epochs=1, batch_size=8)
    assert trainer.state.samples == 24
    assert "val_loss" in history.epochs[-1]
    assert trainer.evaluate(data, batch_size=16)["loss"] > 0


def test_token_logits_are_shifted_for_causal_models_only() -> None:
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    output, target = metric_inputs(gpt2(), {"logits": logits}, labels)
    assert output.shape == (2, 7, 4)
    assert torch.equal(target, labels[:, 1:])
    assert is_causal_lm(gpt2())
    assert not is_causal_lm(bert())
    output, target = metric_inputs(bert(), {"logits": logits}, labels)  # token classification
    assert output.shape == (2, 7, 5)
    assert torch.equal(target, labels)


def lm_run(directory: Path, crash_at: int | None) -> kiln.Trainer:
    kiln.seed_everything(0)
    return kiln.Trainer(
        gpt2(),
        optimizer="adamw",
        lr=3e-3,
        metrics=["accuracy"],
        callbacks=[CrashAtStep(crash_at), kiln.callbacks.StepCheckpoint(every_n_steps=3)],
        dir=directory,
        device="cpu",
        progress=False,
    )


def test_a_crashed_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    """Crash mid-epoch (dropout on, shuffled data), resume from `dir`: the same weights."""
    data = lm_dataset(48)
    straight = lm_run(tmp_path / "straight", None)
    straight.fit(data, epochs=3, batch_size=8)

    crashed = lm_run(tmp_path / "resumed", 8)
    with pytest.raises(SimulatedCrashError):
        crashed.fit(data, epochs=3, batch_size=8)
    resumed = lm_run(tmp_path / "resumed", None)
    resumed.fit(data, epochs=3, batch_size=8, resume=True)

    assert resumed.state.resumed
    assert resumed.state.step == straight.state.step == 18
    assert resumed.history.batch_losses == straight.history.batch_losses
    for ours, theirs in zip(
        resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs)
    other = lm_run(tmp_path / "other", None)  # the counter-check: another seed differs
    kiln.seed_everything(1)
    other.fit(data, epochs=3, batch_size=8)
    assert other.history.batch_losses != straight.history.batch_losses


def test_save_pretrained_and_kiln_checkpoints_load_into_from_config_models(tmp_path: Path) -> None:
    data = classification_dataset(32)
    collator = transformers.DataCollatorWithPadding(tokenizer())
    trainer = kiln.Trainer(bert(), optimizer="adamw", lr=3e-3, device="cpu", progress=False)
    trainer.fit(kiln.loader(data, batch_size=16, collate_fn=collator), epochs=1)
    batch = collator([data[index] for index in range(8)])
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**batch).logits

    trainer.model.save_pretrained(tmp_path / "pretrained")
    again = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "pretrained")
    again.eval()
    with torch.no_grad():
        assert torch.equal(again(**batch).logits, expected)

    trainer.save(tmp_path / "trainer.kiln")
    blank = transformers.AutoModelForSequenceClassification.from_config(bert_config())
    loaded = kiln.load(tmp_path / "trainer.kiln", model=blank, device="cpu", progress=False)
    assert loaded.model is blank
    assert torch.equal(loaded.predict(batch), expected)  # predict gives the logits
    loaded.fit(kiln.loader(data, batch_size=16, collate_fn=collator), epochs=2)  # continues
    assert loaded.state.epoch == 1 + 2  # the epoch count goes on


def test_batches_without_labels_and_no_loss_say_what_to_pass() -> None:
    data = lm_dataset(16).remove_columns(["labels"])
    trainer = kiln.Trainer(gpt2(), optimizer="adamw", device="cpu", progress=False)
    with pytest.raises(ValueError, match="returned CausalLMOutput") as caught:
        trainer.fit(data, epochs=1, batch_size=8)
    message = str(caught.value)
    assert "'input_ids', 'attention_mask'" in message
    assert "logits" in message
    assert "put `labels` in every batch" in message
    assert trainer.state.step == 0


def test_a_model_that_cannot_return_a_loss_still_needs_one() -> None:
    """The counter-check: a plain model with no loss is refused before any batch, as before."""
    trainer = kiln.Trainer(torch.nn.Linear(3, 1), device="cpu", progress=False)
    with pytest.raises(ValueError, match="nothing to minimize"):
        trainer.fit((torch.randn(8, 3), torch.randn(8, 1)), epochs=1)


def two_ranks_run(options: dict[str, Any]) -> None:
    """Train the causal LM on this rank's part of the data; save what it ended with."""
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    kiln.seed_everything(0)
    trainer = kiln.Trainer(
        gpt2(dropout=0.0),
        optimizer="sgd",
        lr=0.5,
        metrics=["accuracy"],
        device="cpu",
        progress=False,
        strategy="ddp",
    )
    data = kiln.loader(lm_dataset(32), batch_size=options["batch_size"])  # each rank its part
    history = trainer.fit(data, epochs=2)
    result = {
        "weights": {key: value.clone() for key, value in trainer.model.state_dict().items()},
        "history": [{k: v for k, v in row.items() if k != "time"} for row in history.epochs],
    }
    torch.save(result, Path(options["out"]) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_ranks_train_like_one_process(tmp_path: Path) -> None:
    """2 ranks x batch 8 == 1 process x batch 16, for a model that computes its own loss.

    No dropout noise: GPT-2's dropout draws differ with the rank, so it is set to 0 here.
    """
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    run_forked({"out": str(tmp_path / "two"), "batch_size": 8}, main=two_ranks_run)
    two_ranks_run({"out": str(tmp_path / "one"), "batch_size": 16})
    first, second = (torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "one" / "rank0.pt")
    assert first["history"] == second["history"]
    for key, value in first["weights"].items():
        assert torch.equal(value, second["weights"][key]), key
        torch.testing.assert_close(value, single["weights"][key], rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(first["history"], single["history"], strict=True):
        for key in ours:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key
    (tmp_path / "small").mkdir()  # the counter-check: one process with a rank's batch differs
    two_ranks_run({"out": str(tmp_path / "small"), "batch_size": 8})
    small = torch.load(tmp_path / "small" / "rank0.pt")
    assert not torch.allclose(
        small["weights"]["lm_head.weight"], single["weights"]["lm_head.weight"]
    )
