import math

import pytest
import torch

from ospo.sampling import ImageSampling, TextSampling, cfg_mix, draw_uniforms, filter_logits, sample_tokens


def test_cfg_mix_matches_formula():
    cond, uncond = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]])
    assert torch.allclose(cfg_mix(cond, uncond, 5.0), torch.tensor([[0.5 + 5 * 0.5, -1.0 + 5 * 3.0]]))
    assert torch.equal(cfg_mix(cond, uncond, 1.0), cond)


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    out = filter_logits(logits, top_k=2)
    assert torch.isinf(out).tolist() == [[False, True, False, True]]


def test_top_p_keeps_smallest_nucleus_crossing_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = filter_logits(probs.log(), top_p=0.75)  # 0.5 < 0.75, 0.5 + 0.3 crosses -> keep two
    assert torch.isinf(out).tolist() == [[False, False, True, True]]
    out = filter_logits(probs.log(), top_p=0.5)  # the first token alone reaches 0.5
    assert torch.isinf(out).tolist() == [[False, True, True, True]]


def test_inverse_cdf_sampling_follows_the_distribution():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    n = 1000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # evenly spread uniforms -> exact frequencies
    tokens = sample_tokens(probs.log().expand(n, 4), u, temperature=1.0)
    counts = torch.bincount(tokens, minlength=4).tolist()
    assert counts == [100, 0, 600, 300]


def test_temperature_zero_is_argmax_and_temperature_sharpens():
    logits = torch.tensor([[0.0, 1.0, 0.5]])
    assert sample_tokens(logits, torch.tensor([0.99]), temperature=0).item() == 1
    u = (torch.arange(300, dtype=torch.float64) + 0.5) / 300
    cold = sample_tokens(logits.expand(300, 3), u, temperature=0.1)
    hot = sample_tokens(logits.expand(300, 3), u, temperature=1.0)
    assert (cold == 1).sum() > (hot == 1).sum()


def test_uniforms_depend_only_on_the_items_seed():
    a = draw_uniforms([7, 8, 9], 5)
    b = draw_uniforms([9, 7], 5)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("kwargs", [dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(top_p=1.5),
                                    dict(cfg_scale=0.5)])
def test_image_sampling_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        ImageSampling(**kwargs)


def test_text_sampling_rejects_zero_tokens():
    with pytest.raises(ValueError, match="max_new_tokens"):
        TextSampling(max_new_tokens=0)
