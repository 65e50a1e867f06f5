"""One rank of a 2-process training run in which a rank fails on purpose (see test_distributed.py).

Started by torchrun, or as a plain process with MASTER_ADDR, MASTER_PORT, RANK and
WORLD_SIZE set; either way the process group comes from
:func:`detbench.engine.launch.init_distributed`. Every rank trains a toy model wrapped in
DistributedDataParallel with :func:`detbench.engine.trainer.do_train` and prints
``iteration N rank R`` as an iteration starts. At iteration FAIL_AT, rank FAIL_RANK fails
as FAIL_MODE says:

* ``exit``: it dies at once with status 3 (``os._exit``: no cleanup, like a crash or the
  kernel's OOM killer), so its sockets close;
* ``hang``: it stops taking part in collectives but stays alive (sleeps), like a rank
  stuck in a deadlock; only the process group's timeout can end the others' wait.

The other rank is then blocked in a collective of that iteration and must raise.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from detbench.engine.launch import init_distributed
from detbench.engine.trainer import do_train
from detbench.solver.lr_scheduler import WarmupMultiStepLR
from detbench.structures import BoxList, to_image_list
from detbench.utils import comm
from detbench.utils.checkpoint import Checkpointer

FAIL_RANK = int(os.environ.get("FAIL_RANK", "1"))
FAIL_AT = int(os.environ.get("FAIL_AT", "2"))
FAIL_MODE = os.environ.get("FAIL_MODE", "exit")
ITERATIONS = 5


class Toy(nn.Module):
    """A linear fit of the first 4 pixels; fails as configured when its turn comes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)
        self.iteration = 0

    def forward(self, images, targets) -> dict[str, torch.Tensor]:
        self.iteration += 1
        rank = comm.get_rank()
        print(f"iteration {self.iteration} rank {rank}", flush=True)
        if rank == FAIL_RANK and self.iteration == FAIL_AT:
            if FAIL_MODE == "exit":
                os._exit(3)
            time.sleep(600)  # "hang": the test kills this process when it is done
        return {"loss_fit": self.fc(images.tensors.flatten(1)[:, :4]).pow(2).mean()}


def main() -> None:
    assert init_distributed("cpu"), "expected WORLD_SIZE > 1"
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Toy())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = WarmupMultiStepLR(optimizer, milestones=[100], warmup_iters=0)
    checkpointer = Checkpointer(model, optimizer, scheduler, "")  # no folder: saves nothing
    batch = (to_image_list(torch.rand(1, 3, 2, 2)), (BoxList(torch.zeros(0, 4), (2, 2)),), (0,))
    do_train(model, [batch] * ITERATIONS, optimizer, scheduler, checkpointer, torch.device("cpu"),
             checkpoint_period=1000, arguments={"iteration": 0}, log_period=1000)
    print(f"finished rank {comm.get_rank()}", flush=True)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
