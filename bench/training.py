"""Training throughput: unmask's loop against a plain Hugging Face Trainer with a per-token Python collator.

All fine-tune the starter, batch 16, AdamW, bf16 autocast where the CPU has it, for the same
number of steps after a warm-up. The baseline is the straightforward way: a collator
that draws one masking rate per batch and decides token by token in Python, and the model's own
loss over the full LM head (every position, the whole vocabulary). It runs twice: on unmask's
packed 128-token blocks (the same data: this isolates the loop), and on one paragraph per example
padded to the longest in its batch, the plain way to feed it (tokens/s counts real tokens only).
unmask packs, masks in tensors and runs the head only on masked positions.

    python bench/training.py       # target: >= 1.5x the baseline's tokens/s
"""

import random
import tempfile
import time
from pathlib import Path

import torch
from common import record
from transformers import AutoModelForMaskedLM, Trainer, TrainerCallback, TrainingArguments

from diffusion_core import checkpoint
from diffusion_core.data import pack, read_texts
from diffusion_core.model import bf16_supported
from diffusion_core.runtime import keep_freed_memory, quiet_transformers
from diffusion_core.starter import STARTER_DIFFUSION, corpus_folder
from diffusion_core.training import TrainConfig, train

STEPS, WARMUP, BATCH, LENGTH = 40, 5, 16, 128


class PerTokenCollator:
    """One masking rate per batch, then a coin per position in Python; padded to the batch's longest."""

    def __init__(self, tokenizer) -> None:
        self.mask, self.pad = tokenizer.mask_token_id, tokenizer.pad_token_id
        self.special = set(tokenizer.all_special_ids)
        self.real_tokens = 0

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rate = random.uniform(0.1, 1.0)
        width = max(len(e["input_ids"]) for e in examples)
        ids, labels, attention = [], [], []
        for example in examples:
            row, row_labels = [], []
            for token in example["input_ids"]:
                if token not in self.special and random.random() < rate:
                    row.append(self.mask)
                    row_labels.append(token)
                else:
                    row.append(token)
                    row_labels.append(-100)
            pad = width - len(row)
            self.real_tokens += len(row)
            ids.append(row + [self.pad] * pad)
            labels.append(row_labels + [-100] * pad)
            attention.append([1] * len(row) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(attention),
            "labels": torch.tensor(labels),
        }


class Clock(TrainerCallback):
    """Times the steps after the warm-up, and the real tokens the collator produced for them."""

    def __init__(self, collator: PerTokenCollator) -> None:
        self.collator = collator
        self.started: float | None = None
        self.tokens_at_start = 0
        self.ended = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == WARMUP:
            self.started, self.tokens_at_start = time.perf_counter(), self.collator.real_tokens
        self.ended = time.perf_counter()


def baseline(examples: list[dict], tokenizer, autocast: bool) -> float:
    model = AutoModelForMaskedLM.from_pretrained(str(STARTER_DIFFUSION), dtype=torch.float32)
    collator = PerTokenCollator(tokenizer)
    clock = Clock(collator)
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out, per_device_train_batch_size=BATCH, max_steps=WARMUP + STEPS, learning_rate=1e-4,
            bf16=autocast, use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no",
            logging_strategy="no", dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
        )  # fmt: skip
        Trainer(model=model, args=arguments, train_dataset=examples, data_collator=collator,
                callbacks=[clock]).train()  # fmt: skip
    assert clock.started is not None
    # the loader may collate ahead of the step that consumes a batch: by a constant, which cancels out
    return (collator.real_tokens - clock.tokens_at_start) / (clock.ended - clock.started)


def ours(corpus, autocast: bool) -> float:
    seen: list = []
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            data=(str(corpus),), output=f"{out}/model", base=str(STARTER_DIFFUSION), max_length=LENGTH,
            batch_size=BATCH, max_steps=WARMUP + STEPS, warmup_steps=0, eval_every=10_000, save_every=10_000,
            held_out=0.0, precision="bf16" if autocast else "fp32", device="auto",
        )  # fmt: skip
        train(config, on_progress=seen.append, show_progress=False)
    first = next(p for p in seen if p.step >= WARMUP)
    last = seen[-1]
    return (last.tokens - first.tokens) / (last.elapsed_s - first.elapsed_s)


def main() -> None:
    quiet_transformers()
    keep_freed_memory()
    random.seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = bf16_supported(device)
    _, tokenizer = checkpoint.load(STARTER_DIFFUSION, torch.device("cpu"))
    corpus = corpus_folder(Path("runs/starter")) / "austen.txt"
    docs = read_texts([corpus])
    packed = [{"input_ids": row.tolist()} for row in pack(docs, tokenizer, LENGTH).input_ids]
    paragraphs = [{"input_ids": ids} for ids in tokenizer(docs, truncation=True, max_length=LENGTH)["input_ids"]]
    random.Random(0).shuffle(paragraphs)
    print(f"starter (6x384, 30,522 tokens), batch {BATCH}, blocks of {LENGTH}, {STEPS} timed steps after {WARMUP};"
          f" bf16 autocast: {autocast}")  # fmt: skip
    same_data = baseline(packed, tokenizer, autocast)
    plain = baseline(paragraphs, tokenizer, autocast)
    mine = ours(corpus, autocast)
    print(f"{'loop':<58}{'tokens/s':>10}{'unmask is':>11}")
    print(
        f"{'HF Trainer + Python collator, packed blocks (same data)':<58}{same_data:>10.0f}{mine / same_data:>10.2f}x"
    )
    print(f"{'HF Trainer + Python collator, a paragraph per example':<58}{plain:>10.0f}{mine / plain:>10.2f}x")
    print(f"{'unmask (packing, tensor masking, masked-only LM head)':<58}{mine:>10.0f}")
    print("target: unmask >= 1.5x the per-token collator baseline's tokens/s (real tokens, padding not counted)")


if __name__ == "__main__":
    with record("training", "Training throughput: unmask vs a Hugging Face Trainer with a per-token Python collator"):
        main()
