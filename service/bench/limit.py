"""The in-process limit: what the served path could reach if serving cost nothing.

The same decode + preprocessing + model (handler code, optimized as served) in this one Python
process using every core, images/s: the best of one stream with all cores as intra-op threads
and one stream per core with one thread each, over the given batch sizes; "single image" is the
one-stream median time for one image at a time.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from handler.cores import available_cores
from handler.model_card import MODEL_FILE, TORCHSCRIPT, ModelCard
from handler.preprocess import model_input
from handler.runtime import load_model
from handler.settings import DEFAULTS


@dataclass
class Limit:
    model: str
    mix: str
    images_per_s: float
    batch: int
    single_image_ms: float
    per_batch: dict = field(default_factory=dict)  # one stream, every core for the model
    parallel: dict = field(default_factory=dict)  # one stream per core, one thread each
    how: str = "one stream"


def rate(one_batch: Callable[[int, int], None], n: int, seconds: float, streams: int) -> tuple[float, list[float]]:
    """images/s of `streams` Python threads each running one_batch(n, threads) back to back (all
    cores as threads for one stream, one each for several); and the per-call times of the first
    stream (torch, the runtimes and Pillow release the GIL while they work)."""
    intra = available_cores() if streams == 1 else 1  # intra-op threads per stream
    counts, times = [0] * streams, []
    stop = time.perf_counter() + seconds

    def stream(i: int) -> None:
        if streams > 1:
            torch.set_num_threads(1)  # one intra-op thread per stream; the caller restores its own
        while (t := time.perf_counter()) < stop:
            one_batch(n, intra)
            counts[i] += n
            if i == 0:
                times.append(time.perf_counter() - t)

    started = time.perf_counter()
    if streams == 1:  # in this (main) thread, as a plain script would
        stream(0)
    else:
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sum(counts) / (time.perf_counter() - started), times


def mix_limit(
    name: str, mix: str, one_batch: Callable[[int, int], None], batch_sizes: list[int], seconds: float
) -> Limit:
    """One image mix: every batch size one stream at all cores, and (several cores) one stream per core."""
    cores = available_cores()
    per_batch, parallel, single = {}, {}, []
    for n in sorted(set(batch_sizes)):
        torch.set_num_threads(cores)
        for _ in range(3):
            one_batch(n, cores)
        per_batch[n], times = rate(one_batch, n, seconds, 1)
        if n == 1:
            single = times
        if cores > 1:
            parallel[n], _ = rate(one_batch, n, seconds, cores)
    torch.set_num_threads(cores)
    best = max(per_batch, key=per_batch.get)
    limit = Limit(name, mix, per_batch[best], best, statistics.median(single) * 1000, per_batch, parallel)
    if parallel and max(parallel.values()) > limit.images_per_s:
        limit.batch = max(parallel, key=parallel.get)
        limit.images_per_s, limit.how = parallel[limit.batch], f"{cores} streams"
    return limit


def in_process_limit(model_dir: Path, name: str, mixes: dict, batch_sizes: list[int], seconds: float) -> list[Limit]:
    """Decode + preprocess + model in this one process using every core, two ways, the best counts:
    one stream of batches with all cores as intra-op threads (decoding then leaves the other cores
    idle), and one stream per core with one intra-op thread each (decode overlaps the model)."""
    card = ModelCard.read(model_dir)
    model = load_model(model_dir / MODEL_FILE, card.provenance)
    spec = card.preprocessing
    results = []
    torch_runs_model = model.runtime == TORCHSCRIPT
    for mix, (data, _) in mixes.items():

        def one_batch(n: int, threads: int, data: bytes = data) -> None:
            if not torch_runs_model:  # as the handler does (handler/cores.py): torch on one thread
                torch.set_num_threads(1)
            tensors = [model_input(data, spec, DEFAULTS.max_pixels) for _ in range(n)]
            with torch.inference_mode():
                model(torch.stack(tensors), threads)

        results.append(mix_limit(name, mix, one_batch, batch_sizes, seconds))
    return results
