"""The profile benchmark's bookkeeping (the numbers it prints are measured, not tested)."""

import torch

from benchmarks import profile as bench_profile


def test_ops_are_grouped_by_kind():
    assert bench_profile.kind_of("aten::mm") == "matmul"
    assert bench_profile.kind_of("aten::cat") == "KV cache / copies"
    assert bench_profile.kind_of("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert bench_profile.kind_of("aten::cumsum") == "sampling"
    assert bench_profile.kind_of("aten::rsqrt") == "other aten"


def test_a_matmul_workload_is_attributed_to_matmul():
    a = torch.randn(256, 256)
    result = bench_profile.profile(lambda: [a @ a for _ in range(20)])
    assert result["by_kind"]["matmul"] > 0.5 * sum(result["by_kind"].values())
    assert result["top"][0]["op"] in ("aten::mm", "aten::matmul")


def test_inference_workloads_run_on_the_plain_model_and_the_train_step_comes_last(tiny_dir):
    from ospo.model import JanusAdapter

    tiny = JanusAdapter.from_pretrained(str(tiny_dir))  # its own copy: the train step would wrap it with LoRA
    plain = type(tiny.model)
    workloads = bench_profile.workloads(tiny, batch=2, vqa_images=2, questions=2)
    labels = list(workloads)
    assert "train" in labels[-1]
    for label in labels[:-1]:
        workloads[label]()
        assert type(tiny.model) is plain and not tiny.model.training, label
    assert tiny.preallocate_cache  # the DynamicCache variant restores the flag
