"""The model adapter: the only module that knows transformers' Janus internals.

Everything else in ospo talks to a `UnifiedModel` (ospo.unified) through a handful of batched methods named in
the pipeline's vocabulary. Janus facts live here: the chat format, the `[cond; uncond]` CFG row layout,
special token ids, the image-token count and grid, and which head scores image codes.

Conventions
- Prompts are plain strings; the adapter applies the checkpoint's chat template.
- Image prompts are `chat(prompt) + <begin_of_image>`; batches are left-padded. Positions are a plain
  arange over the padded row in every path (sampling, teacher forcing), so the two agree exactly.
- `ImageTokens.logps[b, t] = log p(codes[b, t] | prompt_b, codes[b, :t])` under the conditional branch,
  without guidance: `l(y|x)` in the method, what training optimises with `train.guidance` 1 (the paper);
  `image_token_logps(..., cfg_scale=s)` gives the guided distribution the sampler draws from (at temperature 1,
  no top-k / top-p), what training optimises with `train.guidance` s.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError

from ospo.errors import InputError, ModelLoadError
from ospo.kv_cache import preallocated_cache
from ospo.sampling import (DEFAULT_CFG_SCALE, ImageSampling, TextSampling, cfg_mix, draw_image_tokens,
                           draw_uniforms, sample_tokens)
from ospo.unified import ImageTokens, YesNo

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def _check_checkpoint(path: str) -> None:
    """Raises ModelLoadError with a one-line reason when a local path cannot be a Janus checkpoint."""
    p = Path(path)
    if not p.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", path) and not path.startswith("."):
            return  # a hub id ("owner/name"): transformers resolves it (offline: from the local cache)
        from ospo.registry import checkpoint_names

        raise ModelLoadError(f"model path '{path}' does not exist (named checkpoints: {', '.join(checkpoint_names())})")
    if not p.is_dir():
        raise ModelLoadError(f"model path '{path}' is a file; give the checkpoint directory")
    config = p / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"'{path}' is not a Janus checkpoint: it has no config.json")
    import json

    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"'{path}/config.json' is not valid JSON ({e})") from None
    if model_type != "janus":
        raise ModelLoadError(f"'{path}' is not a Janus checkpoint (config.json model_type is '{model_type}')")
    if not any(p.glob("*.safetensors")):
        raise ModelLoadError(f"'{path}' has no *.safetensors weights (ospo loads safetensors only)")


class JanusAdapter:
    """Batched OSPO operations over `transformers.JanusForConditionalGeneration`."""

    def __init__(self, model, processor, *, name: str = "janus", batch_size: int = 16):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.batch_size = batch_size
        self.preallocate_cache = True  # decode loops' KV cache (see preallocated_cache); False = DynamicCache
        # image decode steps get a ready 4-D mask (no host sync per token; sdpa attention only): exact against the
        # 2-D mask on the CPU, off until a GPU run times it warm (benchmarks.gpu --variants ours,4d-mask)
        self.sync_free_decode = False
        # image decoding with static step shapes (ospo.static_decode), on CUDA replayed as one CUDA graph per
        # bucket of `decode_bucket` keys (cuda_graphs); off until measured on a GPU (benchmarks.gpu --variants)
        self.static_decode, self.decode_bucket, self.cuda_graphs = False, 64, True
        cfg = model.config
        self.num_image_tokens = cfg.vision_config.num_image_tokens
        self.image_size = cfg.vision_config.image_size
        self.grid_size = int(round(self.num_image_tokens**0.5))
        self.codebook_size = cfg.vq_config.num_embeddings
        tok = self.tokenizer
        self.bos_id, self.eos_id, self.pad_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
        self.boi_id = tok.convert_tokens_to_ids(tok.boi_token)
        self.yes_ids = self._answer_token_ids(("yes", "Yes"))
        self.no_ids = self._answer_token_ids(("no", "No"))
        if self.grid_size**2 != self.num_image_tokens or cfg.vq_config.num_patches != self.grid_size:
            raise ModelLoadError(f"{name}: num_image_tokens {self.num_image_tokens} does not match the VQ grid "
                                 f"{cfg.vq_config.num_patches}x{cfg.vq_config.num_patches}")

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(cls, path: str, *, dtype: str = "float32", device: str = "cpu", adapter: str | None = None,
                        revision: str | None = None, batch_size: int = 16) -> "JanusAdapter":
        """Loads a transformers-format Janus checkpoint (hub id or directory) and optionally a PEFT LoRA adapter."""
        from transformers import AutoProcessor, JanusForConditionalGeneration

        path = str(path)
        _check_checkpoint(path)
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype '{dtype}'; choose one of {sorted(DTYPES)}")
        try:
            processor = AutoProcessor.from_pretrained(path, revision=revision)
            model = JanusForConditionalGeneration.from_pretrained(path, revision=revision, dtype=DTYPES[dtype],
                                                                  use_safetensors=True)
        except (OSError, SafetensorError) as e:  # hub id not cached offline, missing files, truncated weights
            raise ModelLoadError(f"cannot load model '{path}': {(str(e).splitlines() or [type(e).__name__])[0]}") \
                from None
        if adapter is not None:
            model = _attach_adapter(model, adapter)
        return cls(model.to(device), processor, name=path, batch_size=batch_size)

    def save_pretrained(self, out_dir: str | Path) -> None:
        """The model as it is (a PEFT model saves its adapter) and the processor, loadable with `--model`."""
        self.model.save_pretrained(out_dir)
        self._save_processor(out_dir)

    def save_full_model(self, out_dir: str | Path) -> None:
        """The whole Janus below any PEFT wrapper, and the processor: a checkpoint `--model` loads."""
        self.janus.save_pretrained(out_dir)
        self._save_processor(out_dir)

    def _save_processor(self, out_dir: str | Path) -> None:
        """The processor, without the loading flags transformers keeps among its init arguments: a checkpoint saved
        by an offline run must not tell every later loader to stay offline (`local_files_only`)."""
        self.processor.save_pretrained(out_dir)
        for name in ("tokenizer_config.json", "processor_config.json"):
            path = Path(out_dir) / name
            if path.is_file():
                data = json.loads(path.read_text())
                if isinstance(data, dict) and {"local_files_only", "is_local"} & set(data):
                    kept = {k: v for k, v in data.items() if k not in ("local_files_only", "is_local")}
                    path.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n")

    @property
    def context_length(self) -> int:
        """Tokens the language model can attend over (its position embeddings)."""
        return int(self.janus.config.text_config.max_position_embeddings)

    @property
    def default_cfg_scale(self) -> float:
        """The guidance scale a checkpoint samples at unless told otherwise: its generation config's
        `guidance_scale`, else DEFAULT_CFG_SCALE (the published Janus-Pro protocol)."""
        return _default_cfg_scale(self.janus.generation_config)

    @functools.cached_property
    def code_decoder(self):
        """The decoder the checkpoint's config names (`ospo_code_decoder`), or None for the VQ decoder."""
        config = self.janus.config
        # `ospo_code_painter` is the key of checkpoints pretrained before the decoder registry
        name = getattr(config, "ospo_code_decoder", None) or getattr(config, "ospo_code_painter", None)
        if not name:
            return None
        from ospo.registry import code_decoder

        return code_decoder(name)

    # ---------------------------------------------------------------- what training needs
    LANGUAGE_MODEL_PREFIX = "language_model."  # parameter names of the LM: full fine-tuning trains these alone
    # every linear projection of the language model (the default of train.lora.target_modules)
    lora_target_modules = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

    def is_language_model_parameter(self, name: str) -> bool:
        """Whether `name` (of `self.model.named_parameters()`) belongs to the language model."""
        return f".{self.LANGUAGE_MODEL_PREFIX}" in f".{name}"

    def enable_gradient_checkpointing(self) -> None:
        """Recomputes the language model's layers in the backward pass (same update, less memory)."""
        self.janus.model.language_model.activation_checkpointing_enable(  # transformers 5.24's name for it
            activation_checkpointing_kwargs={"use_reentrant": False})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def janus(self):
        """The JanusForConditionalGeneration, below any PEFT wrapper."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    # ---------------------------------------------------------------- prompt formatting
    def _chat(self, text: str, image: bool = False) -> str:
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def format_prompt(self, text: str, mode: str) -> str:
        """The exact string the model sees: mode 'image' (text-to-image) or 'text' (text generation)."""
        if mode == "image":
            return self._chat(text) + self.tokenizer.boi_token
        system = _system_prompt() if self.processor.use_default_system_prompt else ""
        return system + self._chat(text)

    def _tokenize(self, texts: list[str], **kw) -> dict:
        enc = self.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt", **kw)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _answer_token_ids(self, words) -> list[int]:
        ids = set()
        for w in words:
            for form in (w, " " + w):
                enc = self.tokenizer.encode(form, add_special_tokens=False)
                if len(enc) == 1 and enc[0] != self.tokenizer.unk_token_id:
                    ids.add(enc[0])
        if not ids:
            raise ModelLoadError(f"the tokenizer has no single token for any of {words}; yes/no scoring needs one")
        return sorted(ids)

    # ---------------------------------------------------------------- text generation
    @torch.no_grad()
    def generate_text(self, prompts: Sequence[str], seeds: Sequence[int], sampling: TextSampling = TextSampling()
                      ) -> list[str]:
        """Chat-formatted, left-padded, batched; returns the completions (special tokens removed)."""
        _check_batch(prompts, seeds)
        out = []
        for i in range(0, len(prompts), self.batch_size):
            out += self._generate_text_batch(list(prompts[i:i + self.batch_size]), list(seeds[i:i + self.batch_size]),
                                             sampling)
        return out

    def _generate_text_batch(self, prompts, seeds, sampling):
        janus = self.janus
        enc = self._tokenize([self.format_prompt(p, "text") for p in prompts])
        mask = enc["attention_mask"]
        uniforms = draw_uniforms(seeds, sampling.max_new_tokens)
        lm, embed = janus.model.language_model, janus.get_input_embeddings()
        out = lm(inputs_embeds=embed(enc["input_ids"]), attention_mask=mask, use_cache=True,
                 cache=self._decode_cache(mask.shape[1] + sampling.max_new_tokens))
        cache = out.cache
        done = torch.zeros(len(prompts), dtype=torch.bool, device=mask.device)
        tokens = []
        for t in range(sampling.max_new_tokens):
            logits = janus.lm_head(out.last_hidden_state[:, -1])  # (B, V)
            nxt = sample_tokens(logits, uniforms[:, t], sampling.temperature, sampling.top_k, sampling.top_p)
            nxt = nxt.masked_fill(done, self.pad_id)
            tokens.append(nxt)
            done |= nxt == self.eos_id
            if bool(done.all()) or t == sampling.max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
            out = lm(inputs_embeds=embed(nxt.unsqueeze(1)), attention_mask=mask, cache=cache, use_cache=True)
            cache = out.cache
        ids = torch.stack(tokens, dim=1).tolist()
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    def _decode_cache(self, capacity: int):
        """The decode loops' KV cache: preallocated (see `preallocated_cache`) unless `preallocate_cache` is off
        (then None: transformers' DynamicCache, the baseline `benchmarks.adapter_speed` compares against)."""
        return preallocated_cache(self.janus.config, capacity) if self.preallocate_cache else None

    # ---------------------------------------------------------------- image generation
    def image_prompt_ids(self, prompts: Sequence[str], branch: str = "cond") -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask) of the text-to-image prompts, left-padded, ending in <begin_of_image>; `branch`
        "uncond" gives the unconditional CFG rows (`uncond_ids`)."""
        enc = self._tokenize([self.format_prompt(p, "image") for p in prompts])
        ids = enc["input_ids"]
        if branch == "uncond":
            ids = self.uncond_ids(ids)
        return ids, enc["attention_mask"]

    def uncond_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """The unconditional CFG branch as transformers builds it: every token but BOS and BOI becomes PAD
        (the attention mask is left unchanged)."""
        keep = (ids == self.bos_id) | (ids == self.boi_id)
        return ids.masked_fill(~keep, self.pad_id)

    @torch.no_grad()
    def generate_image_tokens(self, prompts: Sequence[str], seeds: Sequence[int],
                              sampling: ImageSampling = ImageSampling()) -> ImageTokens:
        """Samples `num_image_tokens` codes per prompt: prefill, then decode one token at a time with a KV cache.
        Rows are `[cond; uncond]` when cfg_scale > 1. One seed per prompt; results do not depend on batching."""
        _check_batch(prompts, seeds)
        parts = [self._generate_image_batch(list(prompts[i:i + self.batch_size]),
                                            list(seeds[i:i + self.batch_size]), sampling)
                 for i in range(0, len(prompts), self.batch_size)]
        return ImageTokens(torch.cat([p.codes for p in parts]), torch.cat([p.logps for p in parts]))

    def _generate_image_batch(self, prompts, seeds, sampling):
        janus = self.janus
        ids, mask = self.image_prompt_ids(prompts)
        B, N = len(prompts), self.num_image_tokens
        guided = sampling.cfg_scale != 1
        if guided:
            ids, mask = torch.cat([ids, self.uncond_ids(ids)]), torch.cat([mask, mask])
        uniforms = draw_uniforms(seeds, N).to(ids.device)  # on the device: no host copy per step
        lm, head = janus.model.language_model, janus.model.generation_head
        sdpa = lm.config._attn_implementation == "sdpa"  # a boolean 4-D mask is read as
        if self.static_decode:  # "attend here" by sdpa alone (eager attention would add it to the scores)
            if not sdpa:
                raise InputError("static_decode needs sdpa attention (the model's attn_implementation is "
                                 f"'{lm.config._attn_implementation}')")
            from ospo.static_decode import decode_static

            return ImageTokens(*decode_static(lm, janus.get_input_embeddings(),
                                              janus.prepare_embeddings_for_image_generation, head, ids, mask, B, N,
                                              uniforms, sampling, self.decode_bucket, graphs=self.cuda_graphs))
        P = ids.shape[1]
        out = lm(inputs_embeds=janus.get_input_embeddings()(ids), attention_mask=mask, use_cache=True,
                 cache=self._decode_cache(P + N))
        codes = torch.empty(B, N, dtype=torch.long, device=ids.device)
        logps = torch.empty(B, N, dtype=torch.float32, device=ids.device)
        ones = mask.new_ones(mask.shape[0], 1)
        # With `sync_free_decode`, each decode step's mask ready in 4-D: given a 2-D padding mask, transformers asks
        # the host whether every key is unmasked (`masking_utils._ignore_causal_mask_sdpa`), one GPU sync per token
        # that keeps the host from queueing the next step while the device runs this one. (Without padding the 2-D
        # path then passes no mask at all, which can pick another attention kernel on a GPU.)
        every = (torch.cat([mask, mask.new_ones(mask.shape[0], N)], dim=1).bool()[:, None, None, :]
                 if self.sync_free_decode and sdpa else None)
        for t in range(N):
            logits = head(out.last_hidden_state[:, -1]).float()  # (2B or B, V)
            nxt, logps[:, t] = draw_image_tokens(logits, B, uniforms[:, t], sampling)
            codes[:, t] = nxt
            if t == N - 1:
                break
            step = nxt.repeat(2) if guided else nxt
            if every is not None:
                step_mask = every[..., :P + t + 1]  # the prompt and the t + 1 codes drawn so far
            else:
                mask = step_mask = torch.cat([mask, ones], dim=1)
            out = lm(inputs_embeds=janus.prepare_embeddings_for_image_generation(step[:, None]),
                     attention_mask=step_mask, cache=out.cache, use_cache=True)
        return ImageTokens(codes, logps)

    @torch.no_grad()
    def decode_images(self, codes: torch.Tensor) -> list:
        """(B, N) codes -> B RGB PIL images. Janus-Pro pixels are normalised with mean = std = 0.5. A checkpoint whose
        config names a code decoder (`ospo_code_decoder`, see ospo.registry) is decoded by it instead."""
        from PIL import Image

        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim != 2 or codes.shape[1] != self.num_image_tokens:
            raise InputError(f"codes must have shape (B, {self.num_image_tokens}), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise InputError(f"codes must lie in [0, {self.codebook_size}), "
                             f"got [{int(codes.min())}, {int(codes.max())}]")
        decoder = self.code_decoder
        if decoder is not None:  # codes defined by construction decode exactly, without the learned VQ decoder
            return [Image.fromarray(decoder(row)) for row in codes.cpu().numpy()]
        images = []
        for row in codes:  # one image a pass: the VQ decoder's convolutions round differently at each batch size,
            # and a pixel that moves by one changes what the model answers about the image
            pixels = self.janus.decode_image_tokens(row[None].to(self.device))  # (1, H, W, 3)
            arr = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
            images.append(Image.fromarray(arr[0]))
        return images

    @torch.no_grad()
    def encode_images(self, images: Sequence) -> torch.Tensor:
        """RGB images -> (B, N) codes through the VQ encoder: the reference code's training input (its PNGs
        re-encoded), a lossy round trip of the sampled codes. Pixels map to [-1, 1] as decode_images maps back."""
        import numpy as np
        from PIL import Image

        if self.code_decoder is not None:
            config = self.janus.config
            name = getattr(config, "ospo_code_decoder", None) or getattr(config, "ospo_code_painter", None)
            raise InputError(f"{self.name}: its codes are drawn by a code decoder ({name}) and have no image encoder; "
                             "train on the sampled codes (train.image_codes: sampled)")
        rows = []
        for image in images:  # one a pass, as decode_images, so the codes do not depend on the batch
            rgb = _as_rgb(image).resize((self.image_size, self.image_size), Image.BICUBIC)
            pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
            vq = self.janus.model.vqmodel
            rows.append(vq.encode(pixels.to(self.device, vq.dtype)).image_tokens.reshape(1, -1).long().cpu())
        if not rows:
            return torch.zeros(0, self.num_image_tokens, dtype=torch.long)
        return torch.cat(rows)

    # ---------------------------------------------------------------- teacher forcing
    def image_token_logits(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, codes: torch.Tensor,
                           **lm_kwargs):
        """Generation-head logits for predicting codes[:, t] from prompt + codes[:, :t]: (B, N, V). Also returns
        the LM output (for attentions)."""
        janus = self.janus
        embeds = torch.cat([janus.get_input_embeddings()(prompt_ids),
                            janus.prepare_embeddings_for_image_generation(codes)], dim=1)
        mask = torch.cat([prompt_mask, torch.ones_like(codes)], dim=1)
        out = janus.model.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False, **lm_kwargs)
        P, N = prompt_ids.shape[1], codes.shape[1]
        return janus.model.generation_head(out.last_hidden_state[:, P - 1:P + N - 1]), out

    def image_token_logps(self, prompts: Sequence[str], codes: torch.Tensor, branch: str = "cond",
                          cfg_scale: float = 1.0) -> torch.Tensor:
        """Per-token log p(codes[b, t] | prompt_b, codes[b, :t]) by teacher forcing: (B, N) float32.
        branch 'cond' uses the prompt, 'uncond' the CFG unconditional row; with cfg_scale s > 1 (branch 'cond'
        only) p is the guided distribution the sampler draws from, softmax(u + s * (c - u)). Differentiable."""
        if branch not in ("cond", "uncond"):
            raise InputError(f"branch must be 'cond' or 'uncond', got '{branch}'")
        if cfg_scale != 1 and branch != "cond":
            raise InputError("cfg_scale applies to the 'cond' branch only")
        codes = torch.as_tensor(codes, dtype=torch.long, device=self.device)
        if not len(prompts) or len(prompts) != len(codes):
            raise InputError(f"need one code row per prompt, got {len(prompts)} prompts and {len(codes)} rows")
        ids, mask = self.image_prompt_ids(list(prompts), branch)
        return self.teacher_forced_logps(ids, mask, codes, cfg_scale)

    def teacher_forced_logps(self, ids: torch.Tensor, mask: torch.Tensor, codes: torch.Tensor,
                             cfg_scale: float = 1.0, with_uncond: bool = False, uncond_grad: bool = True):
        """`image_token_logps` from tokenized prompt rows (B, P): with cfg_scale != 1 the unconditional rows are
        appended to the same forward and the logits combined as the sampler does.

        with_uncond (cfg_scale != 1 only): also returns the unconditional row's own per-token log-probs of the
        codes, detached, (guided, uncond): what training under guidance does to the shared unconditional row.
        uncond_grad=False detaches the unconditional logits in the mix (gradients reach the conditional rows only)."""
        B = len(ids)
        if cfg_scale != 1:
            ids, mask = torch.cat([ids, self.uncond_ids(ids)]), torch.cat([mask, mask])
            codes = torch.cat([codes, codes])
        elif with_uncond:
            raise InputError("with_uncond needs cfg_scale != 1 (without guidance no unconditional row is run)")
        logits, _ = self.image_token_logits(ids, mask, codes)
        logits = logits.float()
        uncond = None
        if cfg_scale != 1:
            if with_uncond:
                with torch.no_grad():  # row by row: one (N, V) temporary, not another copy of all the logits
                    uncond = torch.stack([u.gather(-1, k.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(u, -1)
                                          for u, k in zip(logits[B:], codes[B:])])
            logits = cfg_mix(logits[:B], logits[B:] if uncond_grad else logits[B:].detach(), cfg_scale)
        guided = torch.log_softmax(logits, -1).gather(-1, codes[:B].unsqueeze(-1)).squeeze(-1)
        return (guided, uncond) if with_uncond else guided

    @torch.no_grad()
    def object_attention(self, prompts: Sequence[str], codes: torch.Tensor, words: Sequence[Sequence[str]]
                         ) -> list[torch.Tensor]:
        """Attention paid to each given word of the prompt while predicting each image token.

        Returns, per prompt, a (num_layers, num_words, N) tensor: for layer l, word w and image token t, the
        attention weight from the query that predicts codes[t] (position P-1+t) to the word's tokens, summed
        over the word's tokens (and its occurrences) and averaged over heads.
        """
        codes = torch.as_tensor(codes, dtype=torch.long, device=self.device)
        if len(prompts) != len(codes) or len(prompts) != len(words):
            raise InputError("object_attention needs one code row and one word list per prompt")
        texts = [self.format_prompt(p, "image") for p in prompts]
        enc = self._tokenize(texts, return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping").cpu()
        janus = self.janus
        previous = janus.config._attn_implementation
        janus.set_attn_implementation("eager")  # sdpa does not return attention weights
        try:
            _, out = self.image_token_logits(enc["input_ids"], enc["attention_mask"], codes, output_attentions=True)
        finally:
            janus.set_attn_implementation(previous)
        P, N = enc["input_ids"].shape[1], codes.shape[1]
        att = torch.stack(out.attentions, dim=1).float().mean(2)  # (B, L, S, S), heads averaged
        result = []
        for b, (text, prompt) in enumerate(zip(texts, prompts)):
            cols = [_word_token_positions(text, prompt, w, offsets[b]) for w in words[b]]
            queries = att[b, :, P - 1:P + N - 1]  # (L, N, S)
            result.append(torch.stack([queries[:, :, c].sum(-1) for c in cols], dim=1).cpu())  # (L, W, N)
        return result

    # ---------------------------------------------------------------- understanding
    def _vqa_texts(self, questions_per_image):
        return [[self._chat(q, image=True) for q in qs] for qs in questions_per_image]

    def _pixel_values(self, images):
        px = self.processor.image_processor([_as_rgb(im) for im in images], return_tensors="pt")["pixel_values"]
        return px.to(self.device, self.janus.dtype)

    def _yes_no(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(logits.float(), -1)  # (R, V)
        return probs[:, self.yes_ids].max(-1).values, probs[:, self.no_ids].max(-1).values

    @torch.no_grad()
    def yes_no_scores(self, images: Sequence, questions: Sequence[Sequence[str]], share_prefix: bool = True
                      ) -> list[YesNo]:
        """p(yes), p(no) of the next token after each (image, question), the larger of the case variants.

        Questions about one image share one encoded prefix: the image and chat preamble run once and their
        KV cache serves every question. `share_prefix=False` runs one full forward per question (a baseline).
        Each image runs alone with its questions as the rows of one forward, so its answers do not depend on the
        other images asked with it or on `batch_size` (batched images get other float roundings, and a score near
        a threshold then selects other pairs); memory is one image's prefix cache copied once per question.
        """
        if len(images) != len(questions):
            raise InputError(f"need one question list per image, got {len(images)} images and {len(questions)}")
        if not len(images):
            raise InputError("no images given")
        fn = self._yes_no_shared if share_prefix else self._yes_no_full
        return [fn([image], [qs])[0] for image, qs in zip(images, questions)]

    def _yes_no_full(self, images, questions):
        out = []
        for image, qs in zip(images, questions):
            p_yes, p_no = [], []
            for text in self._vqa_texts([qs])[0]:
                enc = self.processor(text=[text], images=[_as_rgb(image)], return_tensors="pt").to(self.device)
                logits = self.janus(**enc, logits_to_keep=1).logits[:, -1]
                y, n = self._yes_no(logits)
                p_yes.append(y)
                p_no.append(n)
            out.append(YesNo(torch.cat(p_yes).cpu(), torch.cat(p_no).cpu()) if qs else _empty_yes_no())
        return out

    def _yes_no_shared(self, images, questions):
        janus = self.janus
        keep = [i for i, qs in enumerate(questions) if qs]  # images with at least one question
        if not keep:
            return [_empty_yes_no() for _ in images]
        texts = self._vqa_texts([questions[i] for i in keep])
        # tokenise every full (image, question) text, then split each at its image's common prefix
        ids = [self._expand_ids(t) for t in texts]  # per image: list of 1-D id lists
        cut = [_common_prefix_len(r) for r in ids]
        prefixes = [r[0][:c] for r, c in zip(ids, cut)]
        P = max(map(len, prefixes))
        pre_ids = torch.full((len(keep), P), self.pad_id, dtype=torch.long)
        pre_mask = torch.zeros(len(keep), P, dtype=torch.long)
        for k, p in enumerate(prefixes):
            pre_ids[k, P - len(p):], pre_mask[k, P - len(p):] = torch.tensor(p), 1
        pre_ids, pre_mask = pre_ids.to(self.device), pre_mask.to(self.device)
        out = janus.model(input_ids=pre_ids, pixel_values=self._pixel_values([images[i] for i in keep]),
                          attention_mask=pre_mask, use_cache=True)
        cache = out.cache
        suffixes = [r[j][c:] for r, c in zip(ids, cut) for j in range(len(r))]
        owner = torch.tensor([k for k, r in enumerate(ids) for _ in r], device=self.device)
        S = max(map(len, suffixes))
        suf_ids = torch.full((len(suffixes), S), self.pad_id, dtype=torch.long)
        suf_mask = torch.zeros(len(suffixes), S, dtype=torch.long)
        for k, s in enumerate(suffixes):  # right-padded: real tokens never see the padding after them
            suf_ids[k, :len(s)], suf_mask[k, :len(s)] = torch.tensor(s), 1
        suf_ids, suf_mask = suf_ids.to(self.device), suf_mask.to(self.device)
        cache.batch_select_indices(owner)
        h = janus.model.language_model(inputs_embeds=janus.get_input_embeddings()(suf_ids),
                                       attention_mask=torch.cat([pre_mask[owner], suf_mask], 1),
                                       cache=cache, use_cache=True).last_hidden_state
        last = suf_mask.sum(1) - 1
        p_yes, p_no = self._yes_no(janus.lm_head(h[torch.arange(len(suffixes)), last]))
        out, start = [], 0
        by_image = {i: k for k, i in enumerate(keep)}
        for i, qs in enumerate(questions):
            if i not in by_image:
                out.append(_empty_yes_no())
                continue
            out.append(YesNo(p_yes[start:start + len(qs)].cpu(), p_no[start:start + len(qs)].cpu()))
            start += len(qs)
        return out

    def _expand_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of chat texts with the image placeholder expanded as the processor does."""
        placeholder = self.tokenizer.image_token
        expanded = self.tokenizer.boi_token + placeholder * self.num_image_tokens + self.tokenizer.eoi_token
        system = _system_prompt() if self.processor.use_default_system_prompt else ""
        return [self.tokenizer(system + t.replace(placeholder, expanded))["input_ids"] for t in texts]


# -------------------------------------------------------------------- helpers
def _default_cfg_scale(generation_config) -> float:
    return float(generation_config.guidance_scale or DEFAULT_CFG_SCALE)


def checkpoint_default_cfg_scale(path: str, revision: str | None = None) -> float:
    """`JanusAdapter.default_cfg_scale` of the checkpoint at `path` without loading its weights (a checkpoint
    without a generation config samples at DEFAULT_CFG_SCALE, as it does loaded)."""
    from transformers import GenerationConfig

    path = str(path)
    _check_checkpoint(path)
    try:
        return _default_cfg_scale(GenerationConfig.from_pretrained(path, revision=revision))
    except OSError:  # no generation_config.json
        return DEFAULT_CFG_SCALE


def _check_batch(prompts, seeds):
    if isinstance(prompts, str):
        raise InputError("prompts must be a list of strings, not one string")
    if not len(prompts):
        raise InputError("no prompts given (the prompt list is empty)")
    if len(seeds) != len(prompts):
        raise InputError(f"need one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")


def _system_prompt() -> str:
    from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

    return DEFAULT_SYSTEM_PROMPT


def _as_rgb(image):
    from PIL import Image
    import numpy as np

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(f"an image must be RGB (H, W, 3), got an array of shape {arr.shape}")
    return Image.fromarray(arr.astype("uint8"))


def _common_prefix_len(rows: list[list[int]]) -> int:
    """Longest common prefix of token rows, leaving at least one token in every row."""
    n = min(map(len, rows)) - 1
    first = rows[0]
    for i in range(n):
        if any(r[i] != first[i] for r in rows[1:]):
            return i
    return n


def _empty_yes_no() -> YesNo:
    return YesNo(torch.zeros(0), torch.zeros(0))


def _word_token_positions(text: str, prompt: str, word: str, offsets: torch.Tensor) -> list[int]:
    """Token positions (in the left-padded row) whose characters overlap whole-word occurrences of `word` in the
    prompt part of `text`."""
    start = text.find(prompt.strip())
    span_end = start + len(prompt.strip())
    spans = [(start + m.start(), start + m.end())
             for m in re.finditer(rf"(?<!\w){re.escape(word.strip())}(?!\w)", prompt.strip(), flags=re.IGNORECASE)]
    cols = [k for k, (a, b) in enumerate(offsets.tolist())
            if b > a and any(a < e and b > s for s, e in spans) and b <= span_end]
    if start < 0 or not cols:
        raise InputError(f"word '{word}' does not occur in the prompt '{prompt}'")
    return cols


def _attach_adapter(model, adapter: str):
    from peft import PeftModel

    p = Path(adapter)
    if not (p / "adapter_config.json").is_file():
        raise ModelLoadError(f"'{adapter}' is not a PEFT adapter directory (no adapter_config.json)")
    if not (p / "adapter_model.safetensors").is_file():  # PEFT would fall back to a pickled adapter_model.bin
        found = "; it holds adapter_model.bin (pickle), which ospo does not load" if (p / "adapter_model.bin").exists() \
            else ""
        raise ModelLoadError(f"adapter '{adapter}' has no adapter_model.safetensors{found}")
    try:
        return PeftModel.from_pretrained(model, adapter)
    except (RuntimeError, ValueError, KeyError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if "size mismatch" in line), lines[0] if lines else type(e).__name__)
        raise ModelLoadError(f"adapter '{adapter}' does not fit this base model: {detail}") from None
