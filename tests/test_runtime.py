"""ospo.runtime: one place resolves rank, device and dtype."""

from ospo import runtime


def test_the_process_layout_comes_from_ospos_own_variables_first_then_the_launchers():
    assert runtime.processes({}) == runtime.Processes(0, 1, 0)
    assert runtime.processes({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == runtime.Processes(3, 8, 1)
    both = {"RANK": "3", "WORLD_SIZE": "8", "OSPO_RANK": "1", "OSPO_WORLD_SIZE": "2"}
    assert runtime.processes(both) == runtime.Processes(1, 2, 1)  # LOCAL_RANK unset: the rank


def test_device_and_dtype_resolve_auto_and_keep_what_was_asked(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.device(None) == runtime.device("auto") == "cpu"
    assert runtime.device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.device("cuda:3") == "cuda:3"
    assert runtime.device("auto", runtime.Processes(0, 1, 0)) == "cuda"
    assert runtime.device("auto", runtime.Processes(5, 8, 1)) == "cuda:1"
    assert runtime.device("cuda", runtime.Processes(5, 8, 1)) == "cuda:1"
    assert runtime.dtype(None, "cuda:1") == runtime.dtype("auto", "cuda") == "bfloat16"
    assert runtime.dtype("auto", "cpu") == "float32" and runtime.dtype("float16", "cpu") == "float16"


def test_a_cuda_device_on_a_machine_without_one_is_one_line(monkeypatch):
    import pytest
    import torch

    from ospo.errors import InputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for asked in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match=f"device '{asked}' asked for, but torch sees no CUDA device"):
            runtime.device(asked)


def test_the_cli_says_so_in_one_line(tiny_dir, tmp_path, capsys, monkeypatch):
    import torch

    from ospo.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["generate", "--model", str(tiny_dir), "--device", "cuda", "--prompt", "x",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "torch sees no CUDA device" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_launcher_that_asked_for_several_processes_and_started_one_is_refused():
    """`accelerate launch --num_processes 2` without a multi-GPU/CPU config: MASTER_ADDR for a group, no WORLD_SIZE
    (the environment measured from accelerate 1.15's simple launcher)."""
    import pytest

    from ospo.errors import InputError

    simple = {"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": "29500"}
    with pytest.raises(InputError, match="asked for several processes but started one"):
        runtime.processes(simple)
    assert runtime.processes({k: v for k, v in simple.items() if not k.startswith("MASTER")}) == \
        runtime.Processes(0, 1, 0)  # one process asked for, one started
    assert runtime.processes({**simple, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == \
        runtime.Processes(1, 2, 1)  # torchrun-based launchers set the group
