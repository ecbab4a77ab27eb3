"""The continual-learning strategies under torchrun DDP (gloo on CPU): what one process
computes is reduced across processes, and the runs finish."""
import glob
import json
import math

import pytest
import torch

from conftest import recipe_argv, run_torchrun

HPARAMS = "hparams/synth/sup_train.yaml"
TINY = ["--task_classes=[[0,1],[2,3]]", "--number_of_epochs=1", "--batch_size=8", "--distributed_backend=gloo"]


def _reduce_on_two_processes(rank, init_file, out_dir):
    """Process ``rank`` of 2: its own Fisher sums and clip count, reduced; written to out_dir."""
    import torch.distributed as dist

    from soundcl.core.ddp import from_main_process, mean_over_processes, shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        # process 0: 2 clips whose squared gradients sum to [2, 4]; process 1: 1 clip, [6, 0]
        sums = {"w": torch.tensor([[2.0, 4.0], [6.0, 0.0]])[rank], "b": torch.tensor([1.0, 5.0])[rank:rank + 1]}
        reduced = mean_over_processes(sums, count=(2, 1)[rank])
        chosen = from_main_process({"ids": [f"made_by_{rank}"], "logits": torch.full((2,), float(rank))})
        torch.save({"reduced": reduced, "shard": shard(range(5)), "chosen": chosen}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_the_fisher_reduction_averages_over_every_process_clips(tmp_path):
    from soundcl.core.ddp import mean_over_processes

    torch.multiprocessing.spawn(_reduce_on_two_processes, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    outs = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for out in outs:  # the mean over the 3 clips of both processes, the same on each
        assert torch.equal(out["reduced"]["w"], torch.tensor([8.0 / 3, 4.0 / 3]))
        assert torch.equal(out["reduced"]["b"], torch.tensor([6.0 / 3]))
        assert out["chosen"]["ids"] == ["made_by_0"] and torch.equal(out["chosen"]["logits"], torch.zeros(2))
    assert [outs[0]["shard"], outs[1]["shard"]] == [[0, 2, 4], [1, 3]]  # the shards partition the clips
    # One process: the plain mean.
    assert torch.equal(mean_over_processes({"w": torch.tensor([2.0, 4.0])}, 2)["w"], torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("strategy", ["ewc", "derpp", "gdumb"])
def test_a_strategy_runs_on_two_processes(strategy, tmp_path, synth_data_folder):
    argv = recipe_argv(HPARAMS, str(tmp_path), synth_data_folder, *TINY, f"--strategy={strategy}",
                       f"--experiment_name={strategy}", "--memory_size=8")
    done = run_torchrun("sup_train", argv)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    folder = tmp_path / strategy / "1986"
    results = json.loads((folder / "results.json").read_text())
    assert not results["partial"] and results["world_size"] == 2
    assert all(math.isfinite(row[k]) for k, row in enumerate(results["accuracy_matrix"]))
    # Both processes trained task 1 on the same memory.
    digests = [json.loads(open(p).read()) for p in sorted(glob.glob(str(folder / "save/task0/memory_rank*.json")))]
    assert [d["rank"] for d in digests] == [0, 1] and digests[0]["sha1"] == digests[1]["sha1"]
    if strategy == "ewc":  # the Fisher of task 0, reduced over both processes' clips
        state = torch.load(folder / "save/task0/ewc.pt")
        assert set(state["fisher"]) == set(state["anchor"])
        assert not any(".module." in name for name in state["fisher"])  # the models' own names
        assert sum(float(f.sum()) for f in state["fisher"].values()) > 0
    if strategy == "derpp":
        logits = json.loads((folder / "save/task1/task_state.json").read_text())["policy_state"]["logits"]
        assert len(logits) == 8
