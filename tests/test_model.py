"""The adapter against transformers' own Janus code paths, on a tiny random checkpoint loaded from disk."""

import json

import pytest
import numpy as np
import torch

from ospo.errors import InputError, ModelLoadError
from ospo.model import JanusAdapter
from ospo.sampling import ImageSampling, TextSampling

from conftest import PROMPTS


def hf_generate(tiny, prompts, cfg_scale):
    enc = tiny.tokenizer([tiny.format_prompt(p, "image") for p in prompts], padding=True, return_tensors="pt")
    return tiny.janus.generate(**enc, generation_mode="image", guidance_scale=cfg_scale, do_sample=False)


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["unpadded", "left-padded"])
def test_greedy_loop_equals_transformers_generate(tiny, prompts):
    ours = tiny.generate_image_tokens(prompts, [0] * len(prompts), ImageSampling(cfg_scale=3.0, temperature=0)).codes
    assert torch.equal(ours, hf_generate(tiny, prompts, 3.0))


def test_preallocated_cache_gives_exactly_the_dynamic_caches_results(tiny):
    sampling = ImageSampling(cfg_scale=5.0)
    results = {}
    for preallocate in (True, False):
        tiny.preallocate_cache = preallocate
        try:
            results[preallocate] = (tiny.generate_image_tokens(PROMPTS, [1, 2, 3, 4], sampling),
                                    tiny.generate_text(PROMPTS[:2], [5, 6], TextSampling(max_new_tokens=12)))
        finally:
            tiny.preallocate_cache = True
    (ours, ours_text), (dynamic, dynamic_text) = results[True], results[False]
    assert torch.equal(ours.codes, dynamic.codes)
    assert torch.equal(ours.logps, dynamic.logps)
    assert ours_text == dynamic_text


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["unpadded", "left-padded"])
def test_the_sync_free_decode_mask_gives_exactly_the_2d_masks_results(tiny, prompts, monkeypatch):
    """With `sync_free_decode` image decode steps take a ready 4-D mask, so transformers no longer asks the host
    whether any key is padded (`masking_utils.fast_all`, a GPU sync per token): only the prefill asks. Codes and
    log-probs are the 2-D mask path's (on the CPU), padded or not, with either cache."""
    from transformers import masking_utils

    asked = []
    original = masking_utils.fast_all
    monkeypatch.setattr(masking_utils, "fast_all", lambda t: asked.append(1) or original(t))
    sampling = ImageSampling(cfg_scale=5.0)
    seeds = list(range(len(prompts)))
    assert not tiny.sync_free_decode  # off until a GPU run times it warm
    for preallocate in (True, False):
        results, asks = {}, {}
        for sync_free in (True, False):
            tiny.preallocate_cache, tiny.sync_free_decode = preallocate, sync_free
            asked.clear()
            try:
                results[sync_free] = tiny.generate_image_tokens(prompts, seeds, sampling)
            finally:
                tiny.preallocate_cache, tiny.sync_free_decode = True, False
            asks[sync_free] = len(asked)
        assert asks[True] <= 2 and asks[False] - asks[True] == tiny.num_image_tokens - 1  # the prefill's, then
        # one per decode step on the 2-D path only
        assert torch.equal(results[True].codes, results[False].codes)
        assert torch.equal(results[True].logps, results[False].logps)


def test_preallocated_cache_grows_and_selects_rows_like_a_dynamic_cache():
    from transformers import LlamaConfig
    from transformers.cache_utils import DynamicCache

    from ospo.kv_cache import preallocated_cache

    config = LlamaConfig(num_hidden_layers=2)
    ours, ref = preallocated_cache(config, capacity=3), DynamicCache()
    g = torch.Generator().manual_seed(0)
    for length in (2, 1, 1, 3):  # the fourth update outgrows the 3-position buffer
        kv = [torch.randn(4, 2, length, 8, generator=g) for _ in range(2)]
        for layer in range(2):
            got, want = ours.update(*kv, layer), ref.update(*kv, layer)
            assert all(torch.equal(a, b) for a, b in zip(got, want))
    rows = torch.tensor([2, 0])
    ours.batch_select_indices(rows)
    ref.batch_select_indices(rows)
    kv = [torch.randn(2, 2, 1, 8, generator=g) for _ in range(2)]
    got, want = ours.update(*kv, 1), ref.update(*kv, 1)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert ours.get_seq_length(1) == ref.get_seq_length(1) == 8

    def same_after_update(edit):
        edit(ours)
        edit(ref)
        kv = [torch.randn(2, 2, 1, 8, generator=g) for _ in range(2)]
        for layer in range(2):
            got, want = ours.update(*kv, layer), ref.update(*kv, layer)
            assert all(torch.equal(a, b) for a, b in zip(got, want))

    same_after_update(lambda c: c.reorder_cache(torch.tensor([1, 0])))
    same_after_update(lambda c: c.crop(-c.get_seq_length()))  # down to empty
    same_after_update(lambda c: c.reset())
    assert ours.get_seq_length() == ref.get_seq_length() == 1


def test_left_padding_does_not_change_an_items_tokens(tiny):
    sampling = ImageSampling(cfg_scale=5.0, temperature=0)
    alone = tiny.generate_image_tokens(PROMPTS[:1], [0], sampling).codes
    padded = tiny.generate_image_tokens(PROMPTS, [0] * 4, sampling).codes  # PROMPTS[0] is the shortest
    assert torch.equal(alone[0], padded[0])


@pytest.mark.parametrize("sampling", [ImageSampling(cfg_scale=5.0), ImageSampling(cfg_scale=1.0),
                                      ImageSampling(cfg_scale=3.0, temperature=0.7, top_k=20, top_p=0.9)],
                         ids=["cfg5", "no-guidance", "filtered"])
def test_sampled_logps_equal_teacher_forcing(tiny, sampling):
    seeds = [11, 12, 13, 14]
    tokens = tiny.generate_image_tokens(PROMPTS, seeds, sampling)
    assert tokens.codes.shape == (4, tiny.num_image_tokens)
    assert tokens.codes.min() >= 0 and tokens.codes.max() < tiny.codebook_size
    forced = tiny.image_token_logps(PROMPTS, tokens.codes)
    torch.testing.assert_close(forced, tokens.logps, atol=1e-5, rtol=0)
    # teacher forcing on a different prompt gives different log-probs (the prompt is really conditioned on)
    other = tiny.image_token_logps(PROMPTS[::-1], tokens.codes)
    assert (other - tokens.logps).abs().max() > 1e-3


def test_uncond_branch_ignores_the_prompt_text(tiny):
    prompts = ["a red circle", "two blue dogs"]  # same token count: the uncond rows become identical
    codes = tiny.generate_image_tokens(prompts[:1], [1], ImageSampling()).codes.repeat(2, 1)
    u = tiny.image_token_logps(prompts, codes, branch="uncond")
    c = tiny.image_token_logps(prompts, codes, branch="cond")
    # transformers keeps BOS and BOI, replaces every other prompt token by PAD and still attends to them
    torch.testing.assert_close(u[0], u[1], atol=1e-5, rtol=0)
    assert (c[0] - c[1]).abs().max() > 1e-3


def test_guided_logps_are_the_samplers_distribution(tiny):
    """cfg_scale s scores codes under softmax(u + s (c - u)): the distribution greedy sampling takes the argmax of."""
    s = 3.0
    codes = tiny.generate_image_tokens(PROMPTS, [5, 6, 7, 8], ImageSampling(cfg_scale=s, temperature=0)).codes
    guided = tiny.image_token_logps(PROMPTS, codes, cfg_scale=s)
    # the same from two separate forwards (cond rows alone, uncond rows alone), mixed by hand
    with torch.no_grad():
        ids, mask = tiny.image_prompt_ids(PROMPTS)
        c = tiny.image_token_logits(ids, mask, codes)[0].float()
        u = tiny.image_token_logits(tiny.uncond_ids(ids), mask, codes)[0].float()
    full = torch.log_softmax(u + s * (c - u), -1)
    torch.testing.assert_close(guided, full.gather(-1, codes.unsqueeze(-1)).squeeze(-1), atol=1e-5, rtol=0)
    assert torch.equal(full.argmax(-1), codes)  # greedy guided sampling took exactly these argmaxes
    assert not torch.equal(c.argmax(-1), codes)  # ... which are not the conditional branch's
    assert (guided - tiny.image_token_logps(PROMPTS, codes)).abs().max() > 1e-3  # not the cond branch
    torch.testing.assert_close(tiny.image_token_logps(PROMPTS, codes, cfg_scale=1.0),
                               tiny.image_token_logps(PROMPTS, codes), atol=0, rtol=0)
    with pytest.raises(InputError, match="cond"):
        tiny.image_token_logps(PROMPTS, codes, branch="uncond", cfg_scale=s)
    # training's drift monitor: the same forward also gives the unconditional row's own log-probs, detached
    g2, unc = tiny.teacher_forced_logps(ids, mask, codes, s, with_uncond=True)
    assert g2.requires_grad and not unc.requires_grad  # a monitor: no gradient through it
    torch.testing.assert_close(g2, guided, atol=1e-6, rtol=0)
    torch.testing.assert_close(unc, tiny.image_token_logps(PROMPTS, codes, branch="uncond"), atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="with_uncond"):
        tiny.teacher_forced_logps(ids, mask, codes, 1.0, with_uncond=True)


def test_guided_logps_with_the_unconditional_row_detached(tiny_dir):
    """uncond_grad=False: same values, but the gradient is that of log softmax(s c + (1 - s) sg(u))."""
    model = JanusAdapter.from_pretrained(str(tiny_dir))
    s, head = 3.0, model.janus.model.generation_head.vision_head.weight
    codes = torch.randint(0, model.codebook_size, (2, model.num_image_tokens), generator=torch.Generator().manual_seed(1))
    ids, mask = model.image_prompt_ids(PROMPTS[:2])

    def grad(fn):
        head.grad = None
        fn().sum().backward()
        return head.grad.clone()

    def by_hand():
        c = model.image_token_logits(ids, mask, codes)[0].float()
        u = model.image_token_logits(model.uncond_ids(ids), mask, codes)[0].float().detach()
        return torch.log_softmax(u + s * (c - u), -1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)

    detached = grad(lambda: model.teacher_forced_logps(ids, mask, codes, s, uncond_grad=False))
    torch.testing.assert_close(detached, grad(by_hand), atol=1e-5, rtol=1e-4)
    both = grad(lambda: model.teacher_forced_logps(ids, mask, codes, s))
    assert (both - detached).abs().max() > 1e-4  # the trained unconditional row adds its own gradient
    with torch.no_grad():
        torch.testing.assert_close(model.teacher_forced_logps(ids, mask, codes, s, uncond_grad=False),
                                   model.teacher_forced_logps(ids, mask, codes, s), atol=0, rtol=0)


def test_seeds_give_the_same_images_alone_in_a_batch_or_reordered(tiny):
    prompts = [PROMPTS[i % 4] for i in range(16)]
    seeds = list(range(100, 116))
    batch = tiny.generate_image_tokens(prompts, seeds, ImageSampling()).codes
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = tiny.generate_image_tokens([prompts[i] for i in order], [seeds[i] for i in order], ImageSampling()).codes
    for k, i in enumerate(order):
        assert torch.equal(shuffled[k], batch[i])
    for i in (0, 5, 15):
        alone = tiny.generate_image_tokens([prompts[i]], [seeds[i]], ImageSampling()).codes
        assert torch.equal(alone[0], batch[i])
    # and different seeds give different images
    assert not torch.equal(batch[0], batch[4])


def test_text_generation_is_per_item_deterministic(tiny):
    sampling = TextSampling(max_new_tokens=6, temperature=1.0)
    batch = tiny.generate_text(PROMPTS, [1, 2, 3, 4], sampling)
    alone = tiny.generate_text(PROMPTS[2:3], [3], sampling)
    assert batch[2] == alone[0]
    assert all(isinstance(t, str) for t in batch)
    greedy = tiny.generate_text(PROMPTS[:2], [0, 0], TextSampling(max_new_tokens=6))
    enc = tiny.tokenizer([tiny.format_prompt(p, "text") for p in PROMPTS[:2]], padding=True, return_tensors="pt")
    hf = tiny.janus.generate(**enc, generation_mode="text", max_new_tokens=6, do_sample=False)
    expected = tiny.tokenizer.batch_decode(hf[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert greedy == [e.strip() for e in expected]


def test_decode_images_gives_rgb_images_of_the_model_size(tiny):
    codes = tiny.generate_image_tokens(PROMPTS[:2], [0, 1], ImageSampling()).codes
    images = tiny.decode_images(codes)
    assert [im.size for im in images] == [(tiny.image_size, tiny.image_size)] * 2
    assert images[0].mode == "RGB"
    with pytest.raises(InputError, match="shape"):
        tiny.decode_images(codes[:, :5])
    with pytest.raises(InputError, match="lie in"):
        tiny.decode_images(codes + tiny.codebook_size)


def test_yes_no_scores_with_shared_prefix_equal_full_forwards(tiny):
    codes = tiny.generate_image_tokens(PROMPTS[:3], [0, 1, 2], ImageSampling()).codes
    images = tiny.decode_images(codes)
    questions = [["is there a red circle ?", "is the dog left of the tree ?", "is there a cat ?"],
                 ["is there a dog ?"],
                 []]
    shared = tiny.yes_no_scores(images, questions)
    full = tiny.yes_no_scores(images, questions, share_prefix=False)
    assert [len(s.p_yes) for s in shared] == [3, 1, 0]
    for s, f in zip(shared, full):
        torch.testing.assert_close(s.p_yes, f.p_yes, atol=1e-5, rtol=0)
        torch.testing.assert_close(s.p_no, f.p_no, atol=1e-5, rtol=0)
        assert ((s.score >= -1) & (s.score <= 1)).all()
    # different questions about one image get different answers (each suffix is really read)
    assert shared[0].p_yes[0] != shared[0].p_yes[2]


def test_yes_no_scores_and_decoded_pixels_do_not_depend_on_the_batch(tiny, monkeypatch):
    codes = tiny.generate_image_tokens(PROMPTS[:4] * 2, list(range(8)), ImageSampling()).codes
    asked = ["is there a red circle ?", "is there a dog ?", "is there a cat ?", "is the dog left of the tree ?",
             "is there a tree ?", "is there a square ?"]
    questions = [asked[:n] for n in (1, 1, 1, 1, 1, 6, 0, 2)]
    results = {}
    for batch_size in (16, 3, 1):
        monkeypatch.setattr(tiny, "batch_size", batch_size)
        images = tiny.decode_images(codes)
        results[batch_size] = ([np.asarray(im).tobytes() for im in images], tiny.yes_no_scores(images, questions))
    alone = [tiny.yes_no_scores([im], [qs])[0] for im, qs in zip(tiny.decode_images(codes), questions)]
    for batch_size in (3, 1):
        assert results[batch_size][0] == results[16][0]  # byte for byte
        for a, b, c in zip(results[batch_size][1], results[16][1], alone):
            assert torch.equal(a.p_yes, b.p_yes) and torch.equal(a.p_no, b.p_no)
            assert torch.equal(a.p_yes, c.p_yes) and torch.equal(a.p_no, c.p_no)


def test_yes_no_takes_the_larger_case_variant(tiny):
    # the tiny vocabulary lowercases, so "Yes" and "yes" are one token; both must map to it
    assert tiny.yes_ids == [tiny.tokenizer.convert_tokens_to_ids("yes")]
    assert tiny.no_ids == [tiny.tokenizer.convert_tokens_to_ids("no")]


def test_object_attention_shapes_and_padding_invariance(tiny):
    codes = tiny.generate_image_tokens(PROMPTS, [0, 1, 2, 3], ImageSampling()).codes
    words = [["red", "circle"], ["cats", "tree"], ["dog"], ["square", "star"]]
    batch = tiny.object_attention(PROMPTS, codes, words)
    L = tiny.janus.config.text_config.num_hidden_layers
    assert [tuple(a.shape) for a in batch] == [(L, len(w), tiny.num_image_tokens) for w in words]
    assert all(((a >= 0) & (a <= 1)).all() for a in batch)
    alone = tiny.object_attention(PROMPTS[:1], codes[:1], words[:1])
    torch.testing.assert_close(alone[0], batch[0], atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="does not occur"):
        tiny.object_attention(PROMPTS[:1], codes[:1], [["zebra"]])


def test_empty_and_mismatched_inputs_raise_clear_errors(tiny):
    with pytest.raises(InputError, match="empty"):
        tiny.generate_image_tokens([], [], ImageSampling())
    with pytest.raises(InputError, match="one seed per prompt"):
        tiny.generate_image_tokens(PROMPTS, [0], ImageSampling())
    with pytest.raises(InputError, match="not one string"):
        tiny.generate_text("a red circle", [0])
    with pytest.raises(InputError, match="no images"):
        tiny.yes_no_scores([], [])


def test_save_load_round_trip_is_bit_identical(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    again = JanusAdapter.from_pretrained(str(tmp_path))
    a, b = tiny.janus.state_dict(), again.janus.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sampling = ImageSampling()
    assert torch.equal(tiny.generate_image_tokens(PROMPTS, [5] * 4, sampling).codes,
                       again.generate_image_tokens(PROMPTS, [5] * 4, sampling).codes)
    assert again.format_prompt("a dog", "image") == tiny.format_prompt("a dog", "image")


def test_loading_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        JanusAdapter.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        JanusAdapter.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelLoadError, match="model_type is 'llama'"):
        JanusAdapter.from_pretrained(str(tmp_path))
    with pytest.raises(ModelLoadError, match="cannot load model 'nobody/nothing'"):  # hub id, offline, not cached
        JanusAdapter.from_pretrained("nobody/nothing")
    with pytest.raises(ModelLoadError, match="does not exist"):
        JanusAdapter.from_pretrained("./relative/missing")


@pytest.mark.parametrize("sampling", [ImageSampling(cfg_scale=5.0), ImageSampling(cfg_scale=1.0),
                                      ImageSampling(cfg_scale=3.0, top_k=50, top_p=0.9)],
                         ids=["guided", "unguided", "top-k-top-p"])
def test_static_decode_draws_the_eager_loops_codes(tiny, sampling):
    """The static-shape decode (one CUDA graph per bucket on a GPU; run eagerly here) draws exactly the eager
    loop's codes for padded prompts, whatever the bucket (1: no extra keys; 5: buckets that do not divide the
    sequence; 64: the default); log-probs agree to rounding, since attention also sums the masked keys' zeros."""
    seeds = [1, 2, 3, 4]
    eager = tiny.generate_image_tokens(PROMPTS, seeds, sampling)
    try:
        tiny.static_decode = True
        for bucket in (1, 5, 64):
            tiny.decode_bucket = bucket
            static = tiny.generate_image_tokens(PROMPTS, seeds, sampling)
            assert torch.equal(static.codes, eager.codes)
            assert torch.allclose(static.logps, eager.logps, atol=2e-6, rtol=0)
            if bucket == 1:
                assert torch.equal(static.logps, eager.logps)
        tiny.decode_bucket = 0
        with pytest.raises(ValueError, match="bucket must be >= 1"):
            tiny.generate_image_tokens(PROMPTS[:1], [0], sampling)
    finally:
        tiny.static_decode, tiny.decode_bucket = False, 64


def test_static_decode_refuses_attention_that_would_misread_its_mask(tiny, monkeypatch):
    """A boolean 4-D mask means "attend here" to sdpa only; eager attention would add it to the scores."""
    from ospo.errors import InputError

    cfg = tiny.janus.model.language_model.config
    monkeypatch.setattr(cfg, "_attn_implementation", "eager")
    tiny.static_decode = True
    try:
        with pytest.raises(InputError, match="static_decode needs sdpa attention"):
            tiny.generate_image_tokens(PROMPTS[:1], [0], ImageSampling())
        tiny.static_decode, tiny.sync_free_decode = False, True  # the 4-D decode mask falls back to the 2-D one
        assert tiny.generate_image_tokens(PROMPTS[:1], [0], ImageSampling()).codes.shape[1] == tiny.num_image_tokens
    finally:
        tiny.static_decode, tiny.sync_free_decode = False, False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run it on a lent device")
def test_cuda_graph_replay_draws_what_the_same_static_steps_draw_eagerly(tiny_dir):
    """On a GPU: the captured and replayed steps (fp32 tiny model) give bit for bit what the same static steps
    give run eagerly, over several buckets and two calls (graphs are captured anew per call), and (nearly) the
    codes of the eager loop."""
    from ospo.model import JanusAdapter

    gpu = JanusAdapter.from_pretrained(tiny_dir, device="cuda")
    gpu.static_decode, gpu.decode_bucket = True, 5
    sampling = ImageSampling(cfg_scale=5.0)
    out = {}
    for graphs in (True, False):
        gpu.cuda_graphs = graphs
        out[graphs] = [gpu.generate_image_tokens(PROMPTS, [1, 2, 3, 4], sampling) for _ in range(2)]
    for replayed, eager in zip(out[True], out[False]):
        assert torch.equal(replayed.codes, eager.codes) and torch.equal(replayed.logps, eager.logps)
    gpu.static_decode = False  # the eager loop attends over fewer (unmasked) keys: equal up to a rare rounding flip
    loop = gpu.generate_image_tokens(PROMPTS, [1, 2, 3, 4], sampling).codes
    assert (loop == out[True][0].codes).float().mean() > 0.9


def test_the_adapter_implements_every_member_of_the_unified_model_protocol(tiny):
    """The protocol is the contract the loop, training and evaluation use: the adapter provides all of it."""
    from ospo.unified import UnifiedModel

    members = {n for n in vars(UnifiedModel) if not n.startswith("_")} | set(UnifiedModel.__annotations__)
    assert {"teacher_forced_logps", "image_prompt_ids", "default_cfg_scale", "save_full_model",
            "is_language_model_parameter", "enable_gradient_checkpointing", "lora_target_modules"} <= members
    assert [n for n in sorted(members) if not hasattr(tiny, n)] == []


def test_default_cfg_scale_is_the_checkpoints_loaded_or_not(tiny, tiny_dir, tmp_path):
    """One reading of a checkpoint's default guidance: the generation config's guidance_scale, else 5 (Janus-Pro's
    protocol); `checkpoint_default_cfg_scale` reads it without loading the weights and agrees with the adapter."""
    import shutil

    from ospo.model import DEFAULT_CFG_SCALE, checkpoint_default_cfg_scale
    from ospo.registry import resolve_model_path

    assert tiny.default_cfg_scale == checkpoint_default_cfg_scale(str(tiny_dir)) == 5.0
    assert checkpoint_default_cfg_scale(resolve_model_path("shapeworld")) == 3.0  # the shipped model's
    copy = shutil.copytree(tiny_dir, tmp_path / "copy")
    config = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps({**config, "guidance_scale": 2.5}))
    assert checkpoint_default_cfg_scale(str(copy)) == JanusAdapter.from_pretrained(str(copy)).default_cfg_scale == 2.5
    (copy / "generation_config.json").unlink()
    assert checkpoint_default_cfg_scale(str(copy)) == JanusAdapter.from_pretrained(str(copy)).default_cfg_scale \
        == DEFAULT_CFG_SCALE
    with pytest.raises(ModelLoadError, match="does not exist"):
        checkpoint_default_cfg_scale(str(tmp_path / "missing"))


def test_what_training_needs_of_the_adapter(tiny_dir, tmp_path):
    """The language model's parameters, its LoRA targets (the config's default), and a full save that loads."""
    from ospo.config import LoraSettings

    adapter = JanusAdapter.from_pretrained(str(tiny_dir))
    names = [n for n, _ in adapter.model.named_parameters()]
    lm = [n for n in names if adapter.is_language_model_parameter(n)]
    assert lm and len(lm) < len(names) and all(n.startswith("model.language_model.") for n in lm)
    assert LoraSettings().target_modules == adapter.lora_target_modules  # one value, declared twice (config hash)
    adapter.save_full_model(tmp_path / "full")
    again = JanusAdapter.from_pretrained(str(tmp_path / "full"))
    a, b = adapter.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
