"""FAISS GPU copies of a CPU index: one GPU, or sharded/replicated across several.

Everything here is guarded by ``hasattr`` checks, because the ``faiss-cpu`` wheel has none
of the GPU symbols; :func:`faiss_gpu_count` is 0 there and nothing else gets called.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._faiss import faiss

# FAISS GPU brute-force and IVF search handle at most this many neighbours per query.
GPU_MAX_K = 2048


def faiss_gpu_count() -> int:
    """Number of GPUs FAISS can use (0 for a CPU-only FAISS build or no CUDA device)."""
    if not (hasattr(faiss, "StandardGpuResources") and hasattr(faiss, "get_num_gpus")):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except RuntimeError:
        return 0


class GpuCopy:
    """A FAISS GPU index cloned from a CPU index, with the resources it needs kept alive.

    Args:
        cpu_index: the trained CPU index to copy.
        gpu_ids: the GPUs to use.
        shard: with several GPUs, True splits the vectors across them (each GPU holds 1/n),
            False replicates the whole index on each (queries are split instead).
    """

    def __init__(self, cpu_index: faiss.Index, gpu_ids: Sequence[int], shard: bool):
        if faiss_gpu_count() == 0:
            raise RuntimeError("this FAISS build has no GPU support (install a faiss GPU build)")
        gpu_ids = list(gpu_ids)
        self.resources = [faiss.StandardGpuResources() for _ in gpu_ids]
        if len(gpu_ids) == 1:
            options = faiss.GpuClonerOptions()
            self.index = faiss.index_cpu_to_gpu(self.resources[0], gpu_ids[0], cpu_index, options)
        else:
            options = faiss.GpuMultipleClonerOptions()
            options.shard = shard
            self.index = faiss.index_cpu_to_gpu_multiple_py(
                self.resources, cpu_index, options, gpu_ids
            )

    def set_parameter(self, name: str, value: int) -> None:
        """Set a search parameter ("nprobe", ...) on every GPU part of the copy."""
        faiss.GpuParameterSpace().set_index_parameter(self.index, name, value)
