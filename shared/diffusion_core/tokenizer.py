"""Tokenizers: a RoBERTa-style byte-level BPE for models built from scratch, and chat templates."""

from collections.abc import Iterable, Mapping

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast, RobertaTokenizerFast

from .errors import InputError

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_bpe(texts: Iterable[str], vocab_size: int = 8000, max_length: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE with RoBERTa's special tokens, trained on `texts` in memory."""
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    end, start = core.token_to_id("</s>"), core.token_to_id("<s>")
    assert end is not None and start is not None, "special tokens are part of every trained vocabulary"
    core.post_processor = processors.RobertaProcessing(("</s>", end), ("<s>", start))
    return RobertaTokenizerFast(tokenizer_object=core, model_max_length=max_length)


def chat_text(
    tokenizer: PreTrainedTokenizerBase, messages: Iterable[Mapping[str, str]], add_generation_prompt: bool = True
) -> str:
    """The tokenizer's chat template over `messages`, as the text after the start token (a canvas opens with
    the start token itself); InputError for a tokenizer without a template."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("this model has no chat template; send a prompt instead", "messages")
    text = str(
        tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
    )
    start = tokenizer.cls_token or tokenizer.bos_token
    return text[len(start) :] if start and text.startswith(start) else text
