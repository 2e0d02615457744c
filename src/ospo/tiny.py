"""Tiny Janus checkpoints built in code: a word-level tokenizer with Janus' special tokens and chat
format, tiny SigLIP / VQ / Llama configs, saved in the Hugging Face layout a real checkpoint has.

Used by the tests (random weights) and by ShapeWorld pretraining (the shipped model). Everything is
loaded back through `ospo.model.JanusAdapter.from_pretrained`, the path users take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Same strings as the real Janus-Pro (DeepSeek-LLM) tokenizer.
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
UNK = "<unk>"
IMAGE = "<image_placeholder>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
USER = "<|User|>"
ASSISTANT = "<|Assistant|>"
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD, IMAGE, BOI, EOI)

# Janus' SFT format: "<|User|>: {content}\n\n<|Assistant|>:" (+ answer + EOS between turns).
# An image item renders as one <image_placeholder>, which the processor expands into
# <begin_of_image> + placeholder * num_image_tokens + <end_of_image>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>: {% elif message['role'] == 'assistant' %}<|Assistant|>: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image_placeholder>\n{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '\\n\\n' }}{% else %}<｜end▁of▁sentence｜>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)

# Words every test model knows, so that the chat preamble, yes/no answers and a few prompts tokenise.
BASE_WORDS = tuple(
    """
    a an the one two three four yes no not and or with of on in is are there this that it what
    left right above below near next to behind front top bottom middle center upper lower
    red green blue yellow orange purple pink black white gray brown
    cat dog bird car bus apple cup chair tree flower house circle square triangle star
    image picture photo please answer describe show shows does do color shape object objects
    question prompt write list replace swap drop dense scene background
    """.split()
) + tuple(".,?!:;'\"-()")


@dataclass(frozen=True)
class TinyJanusSpec:
    """Sizes of a tiny Janus. The VQ downsamples by 2**(len(vq_channel_multiplier)-1); the code grid must equal
    the SigLIP patch grid (image_size // patch_size), which transformers forces and does not check."""

    image_size: int = 64
    patch_size: int = 8
    vq_channel_multiplier: tuple[int, ...] = (1, 1, 2, 2)
    hidden_size: int = 64  # LM width
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    vision_hidden_size: int = 32
    vision_layers: int = 1
    codebook_size: int = 64
    vq_embed_dim: int = 8
    vq_base_channels: int = 32  # GroupNorm(32): VQ channel counts must be multiples of 32
    vq_num_res_blocks: int = 1
    max_position_embeddings: int = 512
    extra_words: tuple[str, ...] = field(default_factory=tuple)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def build_tokenizer(words):
    """A word-level fast tokenizer: lowercases, splits on whitespace and punctuation, prepends BOS itself,
    pads on the left, and carries Janus' special tokens and chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab_words = list(dict.fromkeys(w.lower() for w in words))
    vocab = {t: i for i, t in enumerate(list(SPECIAL_TOKENS) + vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # Role markers are plain added tokens so that decode(skip_special_tokens=True) keeps them.
    tok.add_tokens([AddedToken(USER, normalized=False), AddedToken(ASSISTANT, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces and tidies " ." -> "."
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},
        padding_side="left",
        model_max_length=4096,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer, spec: TinyJanusSpec):
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    h = spec.hidden_size
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=h,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    vision_config = JanusVisionConfig(
        hidden_size=spec.vision_hidden_size,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=4,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        mlp_ratio=2.0,
        projection_dim=h,
        depth=2,
        num_image_tokens=spec.grid**2,  # also the number of tokens generated per image
    )
    vq_config = JanusVQVAEConfig(
        embed_dim=spec.vq_embed_dim,
        num_embeddings=spec.codebook_size,
        latent_channels=spec.vq_base_channels,
        base_channels=spec.vq_base_channels,
        channel_multiplier=list(spec.vq_channel_multiplier),
        num_res_blocks=spec.vq_num_res_blocks,
        projection_dim=h,
        image_token_embed_dim=h,
        num_hidden_layers=2,
    )
    return JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        tie_word_embeddings=False,
    )


def build_processor(tokenizer, image_size: int, num_image_tokens: int, use_default_system_prompt: bool = False):
    from transformers import JanusProcessor
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    image_processor = JanusImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],  # Janus-Pro normalisation (the class default is CLIP's)
        image_std=[0.5, 0.5, 0.5],
    )
    return JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        use_default_system_prompt=use_default_system_prompt,
        num_image_tokens=num_image_tokens,
    )


def build_tiny_janus(spec: TinyJanusSpec = TinyJanusSpec(), words=(), seed: int = 0, use_default_system_prompt=False):
    """Returns (model, processor) with random weights (deterministic given `seed`)."""
    import torch
    from transformers import GenerationConfig, JanusForConditionalGeneration

    from ospo.sampling import DEFAULT_CFG_SCALE

    tokenizer = build_tokenizer(list(BASE_WORDS) + list(words) + list(spec.extra_words))
    config = build_config(tokenizer, spec)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    # As on the hub checkpoints: image mode reads generation_kwargs["boi_token_id"].
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        guidance_scale=DEFAULT_CFG_SCALE,
        temperature=1.0,
        generation_kwargs={"boi_token_id": tokenizer.convert_tokens_to_ids(BOI)},
    )
    processor = build_processor(tokenizer, spec.image_size, spec.grid**2, use_default_system_prompt)
    return model, processor


def save_tiny_janus(out_dir, spec: TinyJanusSpec = TinyJanusSpec(), words=(), seed: int = 0) -> Path:
    """Builds a tiny random Janus and saves it (safetensors + processor + tokenizer) to `out_dir`."""
    model, processor = build_tiny_janus(spec, words, seed)
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


if __name__ == "__main__":  # python -m ospo.tiny OUT_DIR: a random tiny checkpoint to try the CLI on
    import sys

    print(save_tiny_janus(sys.argv[1] if len(sys.argv) > 1 else "tiny-janus"))
