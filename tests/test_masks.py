"""Object masks from attention (v3): Otsu, the mask pipeline on maps with known answers, object words."""

import pytest
import torch

from ospo.masks import gaussian_kernel, middle_layers, object_mask, object_words, otsu_threshold, token_weights


def test_otsu_splits_two_clusters():
    v = torch.tensor([0.1, 0.12, 0.15, 0.11, 0.9, 0.85, 0.95])
    t = otsu_threshold(v)
    assert 0.15 <= t < 0.85
    assert (v > t).tolist() == [False] * 4 + [True] * 3
    assert otsu_threshold(torch.full((5,), 0.3)) == pytest.approx(0.3)


def test_middle_layers_skip_five_or_keep_the_middle_of_shallow_models():
    assert middle_layers(24) == slice(5, 19)
    assert middle_layers(4) == slice(1, 3)
    assert middle_layers(1) == slice(0, 1)


def test_object_mask_recovers_a_known_square_and_unions_words():
    h = w = 8
    base = torch.rand(3, 2, h * w, generator=torch.Generator().manual_seed(0)) * 0.05
    a = base.clone().view(3, 2, h, w)
    a[:, 0, 1:3, 1:3] += 1.0  # word 0 attends to a 2x2 block top left
    a[:, 1, 5:7, 5:8] += 1.0  # word 1 to a 2x3 block bottom right
    m = object_mask(a.view(3, 2, -1), (h, w), skip_layers=1).view(h, w)
    assert m.min() == 0 and m.max() == 1
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[1:3, 1:3] = True
    inside[5:7, 5:8] = True
    assert m[inside].min() > m[~inside].mean()  # both objects are in the union
    assert m[0, 7] < 0.05 and m[7, 0] < 0.05  # far corners stay out


def test_object_mask_edge_cases():
    assert object_mask(torch.zeros(2, 0, 16), (4, 4)).sum() == 0  # no object words: no weighting
    with pytest.raises(ValueError, match="grid"):
        object_mask(torch.zeros(2, 1, 15), (4, 4))


def test_gaussian_kernel_and_weights():
    k = gaussian_kernel(5, 1.0)
    assert k.shape == (5, 5) and k.sum().item() == pytest.approx(1.0) and k[2, 2] == k.max()
    assert token_weights(torch.tensor([0.0, 0.5, 1.0]), 1.0).tolist() == [1.0, 1.5, 2.0]


def test_object_words_come_from_the_prompt_and_its_questions():
    q = ["Is there a red circle?", "Is there a blue square?", "Is the red circle left of the blue square?"]
    assert object_words("a red circle left of a blue square", q) == ["red", "circle", "blue", "square"]
    assert object_words("two green cats on a sofa") == ["green", "cats", "sofa"]
    assert object_words("a cat", ["Is there a dog?"]) == []
