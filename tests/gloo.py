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


# -- a multi-view method on half a batch per rank ------------------------------------------------

BATCH = 8  # global


def _views():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(BATCH, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3)]


def _sgd_steps(model, method, rows, state, steps=2):
    """SGD steps on ``rows`` of the views: the last step's loss and gradients, ``state(method)``."""
    from metricssl.ssl.method import Batch

    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    views = _views()
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = model(Batch([v[rows] for v in views]))["loss"]
        loss.backward()
        grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.requires_grad}
        if step < steps:
            opt.step()
            method.on_step_end(step, steps)
    return loss.detach(), grads, state(method)


def _half_batch_worker(rank, out_dir, build, state):
    method = build()
    model = torch.nn.parallel.DistributedDataParallel(method, broadcast_buffers=False)
    half = BATCH // WORLD
    loss, grads, kept = _sgd_steps(model, method, slice(rank * half, (rank + 1) * half), state)
    dist.all_reduce(loss)
    torch.save({"loss": loss / WORLD, "grads": grads, "state": kept}, out_dir / f"rank{rank}.pt")


def check_half_batches_match_the_whole_batch(tmp_path, build, state):
    """Two DDP ranks, each with half of a 3-view batch, take two SGD steps of ``build()``; the
    loss, the gradients and ``state(method)`` (a queue, a centre) of the second step must equal
    one process's on the whole batch. Returns that state."""
    run_ranks(_half_batch_worker, tmp_path, tmp_path, build, state)
    method = build()
    loss, grads, kept = _sgd_steps(method, method, slice(None), state)
    for r in range(WORLD):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], loss)
        torch.testing.assert_close(got["state"], kept)
        assert got["grads"].keys() == grads.keys()
        for name, g in grads.items():
            torch.testing.assert_close(got["grads"][name], g, msg=name)
    return kept
