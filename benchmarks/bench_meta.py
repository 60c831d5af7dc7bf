"""Cost of one meta-step of ``maml``, ``fomaml`` and ``anil`` relative to one ``mtl`` step.

Setting: the default model (``small_resnet``) on default-sized ``shapes`` images (32×32) with the
tasks segmentation, depth and normals, a learned λ for the meta-learners and the learners' default
sizes: ``mtl`` takes one step on a batch of the experiment's ``batch_size`` (32); a meta-step runs
``episodes_per_batch`` episodes of one support and one query batch each.

- Time: every step kind is built once in this process, warmed up, then timed interleaved
  (mtl, maml, fomaml, anil, mtl, ...) so machine load affects all alike; the median per kind is
  reported, in seconds and as a ratio to the ``mtl`` median.
- Peak memory: each kind runs in a fresh subprocess that builds everything, takes one warm-up
  step (so one-time allocations such as the optimiser state are resident), resets the kernel's
  resident high-water mark (``/proc/self/clear_refs``), records the resident set, takes one step
  and reads the high-water mark ``VmHWM`` again. The difference is the extra resident memory the
  step needed at its peak. glibc is told to serve every allocation of 64 KiB or more by ``mmap``
  (``MALLOC_MMAP_THRESHOLD_``), so tensors freed during the warm-up are returned to the kernel
  rather than recycled unseen. Where ``clear_refs`` cannot be written, the subprocess reports the
  growth of ``ru_maxrss`` over the step instead (a lower bound); ``memory_method`` says which.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sparsekit.config import build_config
from sparsekit.data.loading import cycle, make_loader
from sparsekit.engine.experiment import build
from sparsekit.engine.resolve import resolve
from sparsekit.nn import backbone_conv_weights
from sparsekit.registry import create
from sparsekit.tasks import task_losses
from sparsekit_plugins.learners._meta_trainer import MetaTrainer

KINDS = ("mtl", "maml", "fomaml", "anil")
TASKS = ["segmentation", "depth", "normals"]
N_TRAIN = 128
FIXED_LAM = 0.1
REPEATS = 5
WARMUP = 1
ROOT = Path(__file__).resolve().parent.parent


def build_step(kind: str) -> Callable[[], None]:
    """A closure taking one training step of learner ``kind`` (a meta-step for meta-learners)."""
    meta = kind != "mtl"
    cfg = build_config(
        {
            "dataset": {"name": "shapes", "n_train": N_TRAIN, "n_val": 8, "n_test": 8},
            "tasks": TASKS,
            "learner": kind,
            "lam": "learned" if meta else FIXED_LAM,
            "seed": 0,
            "device": "cpu",
        }
    )
    resolved = resolve(cfg)
    context = build(resolved, lambda info: None).context
    model, combiner, tasks = context.model, context.combiner, context.tasks
    if meta:
        model.train()
        trainer = MetaTrainer(resolved.learner, context)

        def meta_step() -> None:
            trainer.meta_step()

        return meta_step
    cfg = resolved.config
    optimizer = create("optimizer", cfg.optimizer.name).build(
        list(model.parameters()) + list(combiner.parameters()),
        list(backbone_conv_weights(model).values()),
        resolved.penalty,
        FIXED_LAM,
        cfg.optimizer,
    )
    train, generator = context.train, context.generator
    batches = cycle(
        make_loader(train, cfg.batch_size, shuffle=True, generator=generator, drop_last=True)
    )
    model.train()

    def mtl_step() -> None:
        images, targets = next(batches)
        loss = combiner(task_losses(model(images), targets, tasks))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return mtl_step


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(kind: str) -> None:
    """Run in a fresh process: print the peak extra resident memory (KiB) of one step as JSON."""
    import resource

    step = build_step(kind)
    step()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
        step()
        record = {"kib": _status_kb("VmHWM") - before, "method": "VmHWM after clear_refs"}
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        record = {"kib": after - before, "method": "ru_maxrss growth (lower bound)"}
    print(json.dumps(record))


def peak_memory(kind: str) -> dict[str, Any]:
    """:func:`memory_child` of ``kind`` in a fresh interpreter."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONWARNINGS": "ignore"}
    code = f"from benchmarks.bench_meta import memory_child; memory_child({kind!r})"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict[str, Any]:
    """Median step time and peak step memory of each learner, and their ratios to ``mtl``."""
    steps = {kind: build_step(kind) for kind in KINDS}
    for _ in range(WARMUP):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(REPEATS):
        for kind, step in steps.items():
            started = time.perf_counter()
            step()
            times[kind].append(time.perf_counter() - started)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    memory = {kind: peak_memory(kind) for kind in KINDS}
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "repeats": REPEATS,
        "memory_method": memory["mtl"]["method"],
    }
    for kind in KINDS:
        result[f"{kind}_step_s"] = medians[kind]
        result[f"{kind}_peak_mib"] = memory[kind]["kib"] / 1024
    for kind in KINDS[1:]:
        result[f"{kind}_time_ratio"] = medians[kind] / medians["mtl"]
        result[f"{kind}_memory_ratio"] = memory[kind]["kib"] / max(memory["mtl"]["kib"], 1)
    return result
