"""Training throughput: unmask's loop against a plain Hugging Face Trainer with a seeds-style collator.

Both fine-tune the starter on the same packed 128-token blocks, batch 16, AdamW, bf16 autocast
where the CPU has it, for the same number of steps after a warm-up. The baseline is what the
seed implementations did: a collator that draws one masking rate per batch and decides token by
token in Python, and the model's own loss over the full LM head (every position, the whole
vocabulary). unmask masks in tensors and runs the head only on masked positions.

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


class SeedCollator:
    """One masking rate per batch, then a coin per position in Python; labels -100 elsewhere."""

    def __init__(self, tokenizer) -> None:
        self.mask, self.special = tokenizer.mask_token_id, set(tokenizer.all_special_ids)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rate = random.uniform(0.1, 1.0)
        ids, labels = [], []
        for example in examples:
            row, row_labels = [], []
            for token in example["input_ids"]:
                if token not in self.special and random.random() < rate:
                    row.append(self.mask)
                    row_labels.append(token)
                else:
                    row.append(token)
                    row_labels.append(-100)
            ids.append(row)
            labels.append(row_labels)
        ids_t = torch.tensor(ids)
        return {"input_ids": ids_t, "attention_mask": torch.ones_like(ids_t), "labels": torch.tensor(labels)}


class Clock(TrainerCallback):
    def __init__(self) -> None:
        self.started: float | None = None
        self.ended = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == WARMUP:
            self.started = time.perf_counter()
        self.ended = time.perf_counter()


def baseline(blocks, tokenizer, autocast: bool) -> float:
    model = AutoModelForMaskedLM.from_pretrained(str(STARTER_DIFFUSION), dtype=torch.float32)
    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out, per_device_train_batch_size=BATCH, max_steps=WARMUP + STEPS, learning_rate=1e-4,
            bf16=autocast, use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no",
            logging_strategy="no", dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
        )  # fmt: skip
        data = [{"input_ids": row.tolist()} for row in blocks.input_ids]
        Trainer(model=model, args=arguments, train_dataset=data, data_collator=SeedCollator(tokenizer),
                callbacks=[clock]).train()  # fmt: skip
    assert clock.started is not None
    return STEPS * BATCH * LENGTH / (clock.ended - clock.started)


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
    blocks = pack(read_texts([corpus]), tokenizer, LENGTH)
    print(f"starter (6x384, 30,522 tokens), batch {BATCH} x {LENGTH} tokens, {STEPS} timed steps after {WARMUP};"
          f" bf16 autocast: {autocast}")  # fmt: skip
    theirs = baseline(blocks, tokenizer, autocast)
    mine = ours(corpus, autocast)
    print(f"{'loop':<44}{'tokens/s':>10}")
    print(f"{'HF Trainer + per-position Python collator':<44}{theirs:>10.0f}")
    print(f"{'unmask (tensor masking, masked-only LM head)':<44}{mine:>10.0f}")
    print(f"speedup: {mine / theirs:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    with record("training", "Training throughput: unmask vs a Hugging Face Trainer with a seeds-style collator"):
        main()
