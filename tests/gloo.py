"""Two CPU processes joined by a gloo process group, for the tests that compare a DDP run
with one process holding the whole batch."""

import gc

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def run_ranks(worker, tmp_path, *args, start_method: str = "fork") -> None:
    """Run ``worker(rank, *args)`` in ``WORLD`` processes that share a gloo group.

    ``fork`` (the default) lets the children inherit the imported modules instead of
    importing torch again, seconds on a busy machine; ``spawn`` needs a module-level worker.
    The rendezvous is a file: no TCP port to race for with tests running in parallel.
    """
    mp.start_processes(
        _rank_main,
        args=(worker, f"file://{tmp_path / 'rendezvous'}", args),
        nprocs=WORLD,
        join=True,
        start_method=start_method,
    )


def _rank_main(rank, worker, rendezvous, args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=WORLD)
    try:
        worker(rank, *args)
        # No rank tears its sockets down while the other still uses them: a gloo peer that
        # vanishes mid-exchange aborts the survivor (SIGABRT, seen once in CI).
        dist.barrier()
    finally:
        # DDP reducers hold the group; free them before it is destroyed, not at exit.
        gc.collect()
        dist.destroy_process_group()
