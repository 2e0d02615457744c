"""Image-token decoding with static shapes, so that each decode step can be replayed as one CUDA graph.

Why: on a GPU the eager decode loop is launch-bound. A profile of random Janus-Pro-7B on an H200
(`benchmarks.gpu`, docs/experiments/speed.md) counted over 1,100 kernel launches per token and, under the profiler,
25-35 ms of host time per step against 6-11 ms of kernels at batch 1-64 (unprofiled, batch 1 took 21.7 ms a
step). A CUDA graph replays a whole step with one launch, but only a step whose tensor shapes and addresses never
change.

How the step is made static:
- keys and values live in zero-filled buffers of P + N positions (prompt + image tokens); the prefill writes
  [0, P), and each step writes its one key at a *device* index (`position`), not at a Python slice;
- attention reads the first `end` positions, `end` rounded up to a multiple of `bucket`, with a 4-D boolean mask
  that is False past the filled part (and on left padding): within a bucket the step's shapes are the same, so
  one graph per bucket serves it (N / bucket graphs per batch; the extra keys are at most bucket - 1, masked);
- the step index, the position, the previous code and the outputs are device tensors the step updates in place
  (`index_copy_`, `add_`), and the step draws its code from the item's pre-drawn uniforms by device index.

The first step of each bucket runs eagerly on a side stream (the warm-up a capture needs, doing the real step),
then the step is captured and replayed for the rest of the bucket. Without CUDA (or with `graphs=False`) the same
static step runs eagerly: that is what the CPU tests compare with the eager loop (`JanusAdapter.static_decode`).
The masked keys get exactly zero weight: on the CPU in fp32 the codes equal the eager loop's and log-probs agree
to rounding (the attention sums run over more, zero, terms); in bf16 a rounding difference can flip a draw. A
call captures its graphs anew (9-10 for 576 tokens and bucket 64); they are not kept across calls.
"""

from __future__ import annotations

import torch

from ospo.sampling import draw_image_tokens


def _static_layer():
    """The cache layer class (built on first use: transformers is imported lazily)."""
    from transformers.cache_utils import DynamicLayer

    class StaticLayer(DynamicLayer):
        """Keys/values in zero-filled buffers of `capacity` positions. The first update (the prefill) writes
        [0, n); later ones write one position at the device index `position`. Returns the first `view`
        positions."""

        def __init__(self, capacity: int, position: torch.Tensor):
            super().__init__()
            self.capacity, self.position, self.view = capacity, position, 0
            self._k = self._v = None

        def update(self, key_states, value_states, *args, **kwargs):
            if self._k is None:
                self.lazy_initialization(key_states, value_states)
                shape = (*key_states.shape[:-2], self.capacity, key_states.shape[-1])
                self._k, self._v = key_states.new_zeros(shape), value_states.new_zeros(shape)
                n = key_states.shape[-2]
                self._k[..., :n, :], self._v[..., :n, :] = key_states, value_states
                self.view = n
            else:
                self._k.index_copy_(-2, self.position, key_states)
                self._v.index_copy_(-2, self.position, value_states)
            self.keys, self.values = self._k[..., :self.view, :], self._v[..., :self.view, :]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.view

    return StaticLayer


# one function: the captured step closes over the static buffers a CUDA graph records, which must stay put
@torch.no_grad()
def decode_static(lm, embed_tokens, embed_codes, head, ids, mask, B: int, N: int, uniforms, sampling,
                  bucket: int = 64, graphs: bool = True):
    """Samples N codes for B prompts like `JanusAdapter._generate_image_batch` (same arguments after its CFG
    stacking: ids/mask are (R, P) with R = 2B when guided), with static step shapes. Returns (codes, logps).

    The adapter passes the model's pieces: `lm` the language model (inputs_embeds -> last_hidden_state, with a
    cache), `embed_tokens` / `embed_codes` the prompt-token and image-code embeddings, `head` the image head."""
    from transformers.cache_utils import Cache

    if bucket < 1:
        raise ValueError(f"bucket must be >= 1, got {bucket}")
    R, P = ids.shape
    dev = ids.device
    guided = R != B
    position = torch.full((1,), P, dtype=torch.long, device=dev)  # where the next key is written
    index = torch.ones((1,), dtype=torch.long, device=dev)  # the code the next step draws
    layer = _static_layer()
    cache = Cache(layers=[layer(P + N, position) for _ in range(lm.config.num_hidden_layers)])
    out = lm(inputs_embeds=embed_tokens(ids), attention_mask=mask, use_cache=True, cache=cache)
    codes = torch.zeros(B, N, dtype=torch.long, device=dev)
    logps = torch.zeros(B, N, dtype=torch.float32, device=dev)
    keep = torch.cat([mask, mask.new_zeros(R, N)], dim=1).bool()[:, None, None, :]  # (R, 1, 1, P + N)

    def draw(hidden, t):  # hidden (R, D) -> the codes of step t (t an int or a (1,) device index) and their log p
        u = uniforms[:, t] if isinstance(t, int) else uniforms.index_select(1, t).squeeze(1)
        nxt, lp = draw_image_tokens(head(hidden).float(), B, u, sampling)
        return nxt, lp[:, None]

    nxt, lp = draw(out.last_hidden_state[:, -1], 0)
    codes[:, :1], logps[:, :1] = nxt[:, None], lp
    prev = nxt.clone()

    def step(end: int):
        for c in cache.layers:
            c.view = end
        keep.index_fill_(-1, position, True)
        tokens = prev.repeat(2) if guided else prev
        hidden = lm(inputs_embeds=embed_codes(tokens[:, None]),
                    attention_mask=keep[..., :end], position_ids=position.view(1, 1), cache=cache,
                    use_cache=True).last_hidden_state[:, -1]
        nxt, lp = draw(hidden, index)
        codes.index_copy_(1, index, nxt[:, None])
        logps.index_copy_(1, index, lp)
        prev.copy_(nxt)
        position.add_(1)
        index.add_(1)

    capture = graphs and dev.type == "cuda"
    if not capture:
        for t in range(1, N):
            step(min(P + N, -(-(P + t) // bucket) * bucket))  # keys after this step: P + t, rounded up
        return codes, logps
    with torch.cuda.device(dev):  # captures and streams on the model's device
        captured, pool = {}, torch.cuda.graph_pool_handle()
        for t in range(1, N):
            end = min(P + N, -(-(P + t) // bucket) * bucket)
            if end in captured:
                captured[end].replay()
                continue
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                step(end)  # step t itself, and the warm-up the capture needs
            torch.cuda.current_stream().wait_stream(side)
            graph = captured[end] = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                step(end)  # recorded, not run: replayed for the bucket's next steps
    return codes, logps
