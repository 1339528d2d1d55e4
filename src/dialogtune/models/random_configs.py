"""Built-in architecture configs for ``random:<name>`` model specs.

These give models with the real published shapes (``flan-t5-base``) or tiny ones
for tests, with random weights and a byte-level tokenizer built in code — nothing
is downloaded. Every output made from them says that the weights are random.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

# The builders import transformers/tokenizers when called: model specs (and with them config
# validation) read the names below without loading torch.

# 3 special tokens + the 256 byte symbols of the byte-level alphabet.
BYTE_VOCAB_SIZE = 259


def _flan_t5(
    d_model: int, d_ff: int, num_layers: int, num_heads: int, vocab_size: int = 32128
) -> dict[str, Any]:
    # FLAN-T5 is T5 v1.1: gated-GELU feed-forward and a separate (untied) lm_head.
    # ``tie_word_embeddings=False`` is what the published configs say; transformers 5
    # reads it as "do not scale decoder outputs" and we untie lm_head after building.
    return dict(
        kind="t5",
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=64 if d_model >= 512 else d_model // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        n_positions=512,
    )


RANDOM_CONFIGS: dict[str, dict[str, Any]] = {
    # Published google/flan-t5-small and google/flan-t5-base shapes.
    "flan-t5-small": _flan_t5(d_model=512, d_ff=1024, num_layers=8, num_heads=6),
    "flan-t5-base": _flan_t5(d_model=768, d_ff=2048, num_layers=12, num_heads=12),
    # Tiny models for fast tests: a few thousand parameters, byte-level vocabulary.
    # Larger-than-default init so random outputs are varied rather than one repeated
    # token: tests comparing generations (batched vs sequential) then mean something.
    "tiny-t5": {
        **_flan_t5(d_model=32, d_ff=64, num_layers=2, num_heads=4, vocab_size=BYTE_VOCAB_SIZE),
        "initializer_factor": 10.0,
    },
    "tiny-llama": dict(
        kind="llama",
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=1,
        pad_token_id=0,
    ),
    # SmolLM2-135M shapes (a Llama), for memory/speed benchmarks without weights.
    "smollm2-135m": dict(
        kind="llama",
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    ),
}


def build_config(name: str) -> PretrainedConfig:
    """Build the transformers config for a built-in random architecture."""
    from transformers import LlamaConfig, T5Config

    params = dict(RANDOM_CONFIGS[name])
    kind = params.pop("kind")
    if kind == "t5":
        return T5Config(**params)
    return LlamaConfig(**params)


def byte_tokenizer(*, append_eos: bool) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with ids <pad>=0, </s>=1, <unk>=2, then the 256 bytes.

    Seq2seq models expect ``</s>`` appended to every encoded text (as T5's tokenizer
    does); causal prompts must not end with it, so ``append_eos`` picks the behaviour.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    if append_eos:
        backend.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=4096,
    )
