"""Training text: read from files, folders or a Hugging Face dataset; tokenised and packed."""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from .errors import InputError
from .model import SpecialTokens

HF_PREFIX = "hf:"


def read_texts(sources: Iterable[str | Path]) -> list[str]:
    """Documents from .txt (blank-line separated), .jsonl ({"text": ...} per line), folders, or hf:NAME."""
    docs: list[str] = []
    for source in sources:
        text = str(source)
        if text.startswith(HF_PREFIX):
            docs.extend(_hf_texts(text[len(HF_PREFIX) :]))
            continue
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl"))
            if not files:
                raise InputError(f"{path}: folder has no .txt or .jsonl files")
            docs.extend(read_texts(files))
        elif path.is_file():
            docs.extend(_file_texts(path))
        else:
            raise InputError(f"{path}: no such file or folder")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise InputError("the training data holds no text")
    return docs


def _file_texts(path: Path) -> list[str]:
    return parse_texts(path.read_bytes(), path.suffix, str(path))


def parse_texts(content: bytes, suffix: str, name: str) -> list[str]:
    """Documents in a .txt (blank-line separated) or .jsonl ({"text": ...} per line) file's bytes."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{name}: not UTF-8 text") from None
    if "\x00" in text:
        raise InputError(f"{name}: looks binary (contains NUL bytes)")
    if suffix == ".jsonl":
        return [_jsonl_text(name, n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if suffix == ".txt":
        return [" ".join(p.split()) for p in text.split("\n\n")]
    raise InputError(f"{name}: unsupported file type {suffix!r}; use .txt or .jsonl")


def _jsonl_text(name: str, number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}:{number}: invalid JSON ({exc.msg})") from None
    except RecursionError:  # json nests by recursion: a line of 1,000 brackets would end the request in a 500
        raise InputError(f"{name}:{number}: JSON nested too deeply") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise InputError(f'{name}:{number}: each line must be an object with a string "text" field')
    return record["text"]


def _hf_texts(spec: str) -> list[str]:
    """hf:NAME[:CONFIG[:SPLIT]] with a "text" column; needs the `datasets` package and the internet."""
    try:
        import datasets
    except ImportError:
        raise InputError("hf: sources need the 'datasets' package: pip install datasets") from None
    name, config, split = (spec.split(":") + [None, None])[:3]
    try:
        table = datasets.load_dataset(name, config, split=split or "train")
    except Exception as exc:  # the datasets library raises many unrelated types
        raise InputError(f"cannot load dataset {name!r}: {str(exc).splitlines()[0]}") from None
    if "text" not in table.column_names:
        raise InputError(f"dataset {name!r} has no 'text' column (columns: {', '.join(table.column_names)})")
    return list(table["text"])


@dataclass(frozen=True)
class Blocks:
    """Packed training data: ids (N, L), each row starting with the start token; attention (N, L)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def subset(self, index: torch.Tensor) -> "Blocks":
        return Blocks(self.input_ids[index], self.attention_mask[index])

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


def pack(docs: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int) -> Blocks:
    """Join documents with the end token into one stream and cut it into blocks of max_length."""
    special = SpecialTokens.of(tokenizer)
    stream: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(special.end)
    body = max_length - 1
    count = -(-len(stream) // body)
    flat = torch.full((count * body,), special.pad, dtype=torch.long)
    flat[: len(stream)] = torch.tensor(stream, dtype=torch.long)
    ids = torch.cat([torch.full((count, 1), special.start), flat.view(count, body)], dim=1)
    attention = torch.ones_like(ids)
    attention[:, 1:] = (torch.arange(count * body) < len(stream)).view(count, body).long()
    return Blocks(ids, attention)


def split(blocks: Blocks, held_out: float, seed: int) -> tuple[Blocks, Blocks]:
    """Shuffle blocks and hold out a fraction (at least one block when there are two or more)."""
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    n_eval = 0 if len(blocks) < 2 else max(1, round(len(blocks) * held_out))
    return blocks.subset(order[n_eval:]), blocks.subset(order[:n_eval])
