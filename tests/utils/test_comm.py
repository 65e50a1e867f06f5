"""comm in one process (fallbacks) and in two gloo processes; also the seeding helpers of miscellaneous."""

import random

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.testing import assert_close

from detbench.config import get_cfg, load_config
from detbench.utils import comm
from detbench.utils.checkpoint import Checkpointer
from detbench.utils.miscellaneous import mkdir, save_config, set_seed


def test_single_process_fallbacks():
    assert not dist.is_initialized()
    assert (comm.get_world_size(), comm.get_rank(), comm.is_main_process()) == (1, 0, True)
    comm.synchronize()
    obj = {"boxes": [1, 2], "name": "x"}
    gathered = comm.all_gather(obj)
    assert gathered == [obj] and gathered[0] is obj
    losses = {"loss_a": torch.tensor(1.5), "loss_b": torch.tensor(2.0)}
    assert comm.reduce_dict(losses) is losses


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One rank of a 2-process gloo group; its observations go to out_dir/rank<r>.pt."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        gathered = comm.all_gather({"rank": rank, "items": list(range(rank + 2))})
        # Keys inserted in a different order on each rank: reduce_dict must still pair them by name.
        values = {"b": torch.tensor(2.0 * rank), "a": torch.tensor(rank + 1.0)}
        if rank == 1:
            values = dict(reversed(list(values.items())))
        mean = comm.reduce_dict(values)
        total = comm.reduce_dict(values, average=False)
        seed = set_seed(-1, rank)
        # Checkpointer.save gathers each rank's RNG state; only rank 0 writes.
        model = nn.Linear(2, 2)
        ckpt = Checkpointer(model, save_dir=out_dir, save_to_disk=comm.is_main_process())
        ckpt.save("model_0000001", iteration=1)
        after_save = torch.rand(3)
        comm.synchronize()  # the file is complete before anyone reads it
        torch.manual_seed(999)
        ckpt.load()
        after_load = torch.rand(3)
        result = {"gathered": gathered, "mean": mean, "total": total, "seed": seed,
                  "after_save": after_save, "after_load": after_load,
                  "world": comm.get_world_size(), "rank": comm.get_rank()}
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    expected_gather = [{"rank": 0, "items": [0, 1]}, {"rank": 1, "items": [0, 1, 2]}]
    for rank, res in enumerate(results):
        assert (res["world"], res["rank"]) == (2, rank)
        assert res["gathered"] == expected_gather
        # a: (1 + 2) / 2, b: (0 + 2) / 2; sums 3 and 2.
        assert_close(res["mean"], {"a": torch.tensor(1.5), "b": torch.tensor(1.0)})
        assert_close(res["total"], {"a": torch.tensor(3.0), "b": torch.tensor(2.0)})
        # After resuming, each rank continues its own random stream, not rank 0's.
        assert_close(res["after_load"], res["after_save"], rtol=0, atol=0)
    assert results[1]["seed"] == results[0]["seed"] + 1  # one shared random base seed, offset by rank
    assert not torch.equal(results[0]["after_save"], results[1]["after_save"])


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(2)


def test_set_seed_is_reproducible_and_offset_by_rank():
    assert set_seed(7, rank=0) == 7
    first = _draws()
    assert set_seed(7, rank=0) == 7
    assert_close(_draws(), first, rtol=0, atol=0)
    assert set_seed(6, rank=1) == 7  # same seed as (7, 0): the rank is an offset
    assert_close(_draws(), first, rtol=0, atol=0)
    drawn = set_seed(-1, rank=0)
    assert 0 <= drawn < 2**31
    random_run = _draws()
    set_seed(drawn, rank=0)  # the returned seed reproduces a run started with SEED -1
    assert_close(_draws(), random_run, rtol=0, atol=0)


def test_mkdir_and_save_config_round_trip(tmp_path):
    folder = tmp_path / "a" / "b"
    mkdir(folder)
    mkdir(folder)  # existing is fine
    cfg = get_cfg()
    cfg.SOLVER.STEPS = (10, 20)
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    save_config(cfg, folder / "config.yaml")
    assert load_config(str(folder / "config.yaml")) == cfg
    assert [p.name for p in folder.iterdir()] == ["config.yaml"]
