"""Stage 4 training loop on the tiny random Janus: what trains, overfitting, resume, NaN, 2 processes, the stage."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ospo.config import LoraSettings, TrainConfig
from ospo.model import JanusAdapter
from ospo.training import PairData, TrainingError, batch_rows, learning_rate, reference_logps, train
from ospo.training import loop as loop_mod

FAST = TrainConfig(lr=1e-2, steps=4, batch_size=2, micro_batch_size=1, lora=LoraSettings(r=4, alpha=8),
                   save_every=2, keep_last=2, guidance=1.0)


def make_pairs(adapter, n: int) -> PairData:
    g = torch.Generator().manual_seed(0)
    N, V = adapter.num_image_tokens, adapter.janus.config.vq_config.num_embeddings
    prompts = ["a red circle", "two blue cats", "a dog left of a tree", "a green square", "three stars", "a cup"]
    return PairData(ids=[f"p{i}" for i in range(n)], prompts=[prompts[i % 6] for i in range(n)],
                    negative_prompts=[("a blue circle" if i % 2 == 0 else None) for i in range(n)],
                    chosen=torch.randint(0, V, (n, N), generator=g), rejected=torch.randint(0, V, (n, N), generator=g))


@pytest.fixture
def fresh(tiny_dir):
    return JanusAdapter.from_pretrained(str(tiny_dir))


def test_only_lora_weights_change(fresh, tmp_path):
    before = {k: v.clone() for k, v in fresh.janus.state_dict().items()}
    train(fresh, make_pairs(fresh, 4), FAST, tmp_path, progress=False)
    after = fresh.model.state_dict()
    lora = [k for k in after if "lora_" in k]
    assert lora and all(".language_model." in k for k in lora)
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in after.items()
            if "lora_" not in k}
    assert set(base) == set(before)
    assert all(torch.equal(before[k], base[k]) for k in before)  # bit-identical
    assert any(not torch.all(after[k] == 0) for k in lora if "lora_B" in k)  # B starts at zero: it moved


def test_gradient_checkpointing_recomputes_the_layers_and_gives_the_same_update(tiny_dir, tmp_path):
    trained = {}
    for on in (False, True):
        adapter = JanusAdapter.from_pretrained(str(tiny_dir))
        # the layer's first module: torch's recompute (which stops early once what backward needs is back) runs it
        norm = adapter.janus.model.language_model.layers[0].input_layernorm
        calls = []
        norm.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
        cfg = dataclasses.replace(FAST, steps=2, gradient_checkpointing=on, save_every=0)
        train(adapter, make_pairs(adapter, 4), cfg, tmp_path / str(on), progress=False)
        trained[on] = {k: v.clone() for k, v in adapter.model.state_dict().items() if "lora_" in k}
        # 2 steps x 2 micro-batches: one forward each, and with checkpointing a second one inside backward
        assert len(calls) == (8 if on else 4), calls
    assert trained[True].keys() == trained[False].keys()
    assert all(torch.allclose(trained[True][k], trained[False][k], atol=1e-6) for k in trained[True])


def test_overfitting_one_pair_raises_margin_and_reward_accuracy(fresh, tmp_path):
    with torch.no_grad():  # the random tiny head's logits span ~0.1 nats; widen it so the LM can move them
        fresh.janus.model.generation_head.vision_head.weight.mul_(30)
    cfg = dataclasses.replace(FAST, steps=25, batch_size=1, simpo_weight=1.0, copo_weight=0.0, sft_weight=0.0,
                              lr=3e-2, save_every=0)
    train(fresh, make_pairs(fresh, 1), cfg, tmp_path, progress=False)
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"] + 1.0
    assert rows[-1]["rewards/accuracies"] == 1.0
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_guidance_trains_on_the_guided_distribution_and_dpo_references_it(fresh, tmp_path):
    data = make_pairs(fresh, 2)
    with torch.no_grad():  # widen the random head's logits so the two branches differ measurably
        fresh.janus.model.generation_head.vision_head.weight.mul_(30)
        guided = fresh.image_token_logps(data.prompts, data.chosen, cfg_scale=3.0).mean(-1).mean().item()
        cond = fresh.image_token_logps(data.prompts, data.chosen).mean(-1).mean().item()
        fresh_uncond = fresh.image_token_logps(data.prompts, data.chosen, branch="uncond").mean(-1).mean().item()
    assert abs(guided - cond) > 1e-3
    cfg = dataclasses.replace(FAST, steps=1, batch_size=2, micro_batch_size=2, guidance=3.0, save_every=0,
                              simpo_weight=0.0, copo_weight=0.0, sft_weight=0.0, dpo_weight=1.0)
    ref_chosen, ref_rejected = reference_logps(fresh, data, 2, guidance=3.0)
    data.reference_chosen, data.reference_rejected = ref_chosen, ref_rejected
    train(fresh, data, cfg, tmp_path, progress=False)
    row = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert row["logps/chosen"] == pytest.approx(guided, abs=1e-5)  # logged from the forward, before the update
    # the shared unconditional row's likelihood of the chosen images (its drift), logged from the same forward
    assert row["logps/uncond_chosen"] == pytest.approx(fresh_uncond, abs=1e-5)
    assert row["rewards/margins"] == pytest.approx(0.0, abs=1e-5)  # the reference scores the same distribution


def test_guidance_uncond_grad_reaches_training(tiny_dir, tmp_path):
    """train.guidance_uncond_grad=false detaches the unconditional row: the same steps then move the weights
    differently (the first loss logged is the same, both score the same guided distribution)."""
    weights, logged = [], []
    for flag in (True, False):
        model = JanusAdapter.from_pretrained(str(tiny_dir))
        with torch.no_grad():
            model.janus.model.generation_head.vision_head.weight.mul_(30)
        cfg = dataclasses.replace(FAST, steps=2, batch_size=2, micro_batch_size=2, guidance=3.0, save_every=0,
                                  guidance_uncond_grad=flag)
        train(model, make_pairs(model, 2), cfg, tmp_path / str(flag), progress=False)
        weights.append({k: v.detach().clone() for k, v in model.model.state_dict().items() if "lora_B" in k})
        logged.append(json.loads((tmp_path / str(flag) / "log.jsonl").read_text().splitlines()[0]))
    assert logged[0]["loss"] == pytest.approx(logged[1]["loss"], abs=1e-5)
    assert any((weights[0][k] - weights[1][k]).abs().max() > 1e-6 for k in weights[0])


def test_full_fine_tuning_trains_the_language_model_only(fresh, tmp_path):
    before = {k: v.clone() for k, v in fresh.janus.state_dict().items()}
    cfg = dataclasses.replace(FAST, steps=1, lora=LoraSettings(enabled=False), lr=1e-3)
    train(fresh, make_pairs(fresh, 2), cfg, tmp_path, progress=False)
    after = fresh.janus.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.language_model.") for k in changed)


def test_resume_continues_the_exact_loss_curve(tiny_dir, tmp_path, monkeypatch):
    cfg = dataclasses.replace(FAST, steps=6, save_every=2, keep_last=1)
    train(JanusAdapter.from_pretrained(str(tiny_dir)), make_pairs(FAST_ADAPTER(tiny_dir), 4), cfg, tmp_path / "a",
          progress=False)
    calls = {"n": 0}
    real = loop_mod.objective

    def crash_at_step_5(*args):
        calls["n"] += 1
        if calls["n"] > 4 * 2:  # 2 micro-batches a step: dies inside step 5
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(loop_mod, "objective", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(JanusAdapter.from_pretrained(str(tiny_dir)), make_pairs(FAST_ADAPTER(tiny_dir), 4), cfg, tmp_path / "b",
              progress=False)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-000004"]  # keep_last=1
    monkeypatch.setattr(loop_mod, "objective", real)
    summary = train(JanusAdapter.from_pretrained(str(tiny_dir)), make_pairs(FAST_ADAPTER(tiny_dir), 4), cfg,
                    tmp_path / "b", progress=False)
    assert summary["resumed_from"] == 4
    a = [json.loads(r) for r in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    b = [json.loads(r) for r in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6, abs=1e-7)
    wa = load_file(str(tmp_path / "a" / "checkpoints" / "step-000006" / "trainable.safetensors"))
    wb = load_file(str(tmp_path / "b" / "checkpoints" / "step-000006" / "trainable.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-7) for k in wa)


def FAST_ADAPTER(tiny_dir):
    return JanusAdapter.from_pretrained(str(tiny_dir))


def test_non_finite_loss_stops_before_the_update_and_keeps_the_checkpoint(fresh, tmp_path, monkeypatch):
    real = loop_mod.objective
    calls = {"n": 0}

    def nan_at_step_3(*args):
        calls["n"] += 1
        losses, metrics = real(*args)
        return (losses * float("nan") if calls["n"] > 4 else losses), metrics

    monkeypatch.setattr(loop_mod, "objective", nan_at_step_3)
    with pytest.raises(TrainingError, match=r"loss became nan at step 3.*step-000002"):
        train(fresh, make_pairs(fresh, 4), FAST, tmp_path, progress=False)
    assert (tmp_path / "checkpoints" / "step-000002" / "state.json").exists()


def test_batch_sizes_that_do_not_split_are_refused(fresh, tmp_path):
    with pytest.raises(TrainingError, match="multiple of train.micro_batch_size"):
        train(fresh, make_pairs(fresh, 4), dataclasses.replace(FAST, batch_size=3, micro_batch_size=2), tmp_path)
    with pytest.raises(TrainingError, match="no training pairs"):
        train(fresh, make_pairs(fresh, 0), FAST, tmp_path)
    with pytest.raises(TrainingError, match="train.guidance is unset"):  # only a RunConfig knows the sampler's
        train(fresh, make_pairs(fresh, 4), dataclasses.replace(FAST, guidance=None), tmp_path)
    assert not hasattr(fresh.model, "peft_config")  # refused before the model is touched


def test_data_order_and_schedule_are_pure():
    a = batch_rows(0, 5, 3, 4)  # rows 12..15 cross the epoch boundary at 15
    assert len(a) == 4 and (a == batch_rows(0, 5, 3, 4)).all()
    first_epoch = [r for s in range(5) for r in batch_rows(0, 5, s, 1)]
    assert sorted(first_epoch) == [0, 1, 2, 3, 4]
    cos = TrainConfig(schedule="cosine", warmup_ratio=0.1)
    assert learning_rate(cos, 0, 100, 1.0) == pytest.approx(0.1)
    assert learning_rate(cos, 10, 100, 1.0) == pytest.approx(1.0)
    assert learning_rate(cos, 99, 100, 1.0) < 0.01
    assert learning_rate(TrainConfig(), 50, 100, 2.0) == 2.0


def test_two_gloo_processes_give_the_update_of_one_with_accumulation(tiny_dir, tmp_path):
    """Global batch 4: 1 process x 4 micro-batches of 1 vs 2 processes x 2 micro-batches of 1. Tolerance 1e-5
    (float summation order differs: DDP averages across processes, one process sums its micro-batches)."""
    worker = Path(__file__).with_name("_train_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    subprocess.run([sys.executable, str(worker), str(tiny_dir), str(tmp_path / "one"), str(Path(__file__).parent),
                    "1"], env=env, check=True, timeout=300)
    from ospo.pipeline import _free_port

    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(worker), str(tiny_dir), str(tmp_path / "two"),
                               str(Path(__file__).parent), "1"],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
             for r in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    one = load_file(str(tmp_path / "one" / "checkpoints" / "step-000003" / "trainable.safetensors"))
    two = load_file(str(tmp_path / "two" / "checkpoints" / "step-000003" / "trainable.safetensors"))
    assert set(one) == set(two)
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    assert any(one[k].abs().max() > 0 for k in one if "lora_B" in k)  # it did train
    rows_one = [json.loads(r) for r in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    rows_two = [json.loads(r) for r in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert rows_one[-1]["loss"] == pytest.approx(rows_two[-1]["loss"], rel=1e-5)


def test_an_empty_lora_target_means_the_adapters_layers(tiny_dir):
    """train.lora.target_modules "" trains the layers the adapter names (`lora_target_modules`), the default's."""
    from ospo.training import prepare_model

    trained = []
    for target in (LoraSettings().target_modules, ""):
        adapter = JanusAdapter.from_pretrained(str(tiny_dir))
        prepare_model(adapter, TrainConfig(lora=LoraSettings(r=4, alpha=8, target_modules=target)))
        trained.append([n for n, p in adapter.model.named_parameters() if p.requires_grad])
    assert trained[0] and trained[0] == trained[1]
