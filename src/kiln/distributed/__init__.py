"""Training on several processes: the same script under `torchrun` trains with DDP.

kiln does not invent a distributed runtime. Start the script that trains on one process with
`torchrun --nproc-per-node N script.py` and the `Trainer` finds the group in the environment:

- each rank joins the `torch.distributed` group (gloo on the CPU, NCCL on CUDA), on its own
  device (`device="auto"` is `cuda:LOCAL_RANK`);
- the model trains inside `DistributedDataParallel` (gradients averaged over the ranks), also
  when the model defines `training_step`; `trainer.model` stays your module;
- `Data`, Datasets and DataLoaders are cut per rank from one order that all ranks agree on,
  with the epoch set for shuffling; `batch_size` is per rank, so N ranks with batch B train
  like one process with batch N*B (see `sharding` for the rule and the uneven end);
- losses and metrics are summed over the ranks: every rank logs the same values, those of
  one process over all the data;
- progress, logs, plots and checkpoints come from rank 0 (callbacks marked
  `main_process_only` run there only; the others write only from rank 0), with barriers so no
  rank reads a file half-written; on resume each rank takes back its own random generators;
- a stop asked for on any rank stops every rank at the end of the same epoch.

Faults are torchrun's to handle: a rank that raises ends with its error and torchrun stops
the others; with `--max-restarts`, the group restarts and `fit(..., resume=True)` continues from
the last checkpoint (set `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1` for torchrun: otherwise the
restarted ranks may read the killed attempt's addresses, pytorch/pytorch#135712). Signals are
torchrun's too: kiln's clean stop on SIGINT/SIGTERM is for one process. `setup(timeout=...)`
(or `KILN_DIST_TIMEOUT`) bounds how long a collective waits for a rank that is gone.

What lives here: the public names. The process group is in `context.py`, the collectives in
`collectives.py`, the shards in `sharding.py`, the trainer's side in `replicas.py`.

Example:
    >>> import kiln
    >>> context = kiln.distributed.setup("cpu")  # `python script.py`: a group of one
    >>> context.world_size if not context.enabled else 1
    1
"""

from kiln.distributed.collectives import (
    all_gather,
    all_gather_objects,
    all_reduce,
    broadcast_object,
    gather_objects,
)
from kiln.distributed.context import (
    DistributedContext,
    barrier,
    in_torchrun_environment,
    is_main_process,
    rank,
    rank_zero_only,
    setup,
    world_size,
)
from kiln.distributed.replicas import Replicas, StepForward, wrap_model
from kiln.distributed.sharding import DataShard, RankSampler, shard, shard_loader

__all__ = [
    "DataShard",
    "DistributedContext",
    "RankSampler",
    "Replicas",
    "StepForward",
    "all_gather",
    "all_gather_objects",
    "all_reduce",
    "barrier",
    "broadcast_object",
    "gather_objects",
    "in_torchrun_environment",
    "is_main_process",
    "rank",
    "rank_zero_only",
    "setup",
    "shard",
    "shard_loader",
    "world_size",
    "wrap_model",
]
