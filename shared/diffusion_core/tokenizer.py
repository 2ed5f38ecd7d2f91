"""Training a RoBERTa-style byte-level BPE tokenizer for models built from scratch."""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, RobertaTokenizerFast

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
