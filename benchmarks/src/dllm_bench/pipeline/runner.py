"""`quantize_model`: the sequential layer-wise pipeline that runs a `Recipe` on a model.

The pipeline knows stages, not methods: it reads the recipe's plan (each step's registry record from
``dllm_calib`` and its config) and calls every method's ``apply`` on a `MethodContext` of the unit it
covers. Order of work (see docs/architecture.md):

1. calibration, when some step's ``needs`` reads calibration states: build or load the states (TMAS
   runs the float model's sampler); score the float model's confidence when a step needs it;
2. the ``global`` stage: whole-model transforms in recipe order (`ModelContext`: float statistics,
   collected one block at a time);
3. capture: the embedding output of every calibration batch is the first block's input;
4. for each block, on the accelerator alone (the rest of the model stays on the CPU): the per-block
   steps in stage order (block transforms, activation calibration, the weight quantizer, activation
   quantizers) on a `BlockContext`, then the actions they deferred; then the batches are propagated
   through the quantized block to give the next block's inputs.

With a work directory every completed block is checkpointed and a later call with the same arguments
resumes after the last completed block (`dllm_bench.pipeline.workdir`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from dllm_calib import CalibrationSet, ExpertPolicy, LogRow, Method, Stage
from dllm_sampler import DiffusionLM
from dllm_sampler.moe_topology import MoETopology
from tqdm import tqdm

from dllm_bench.pipeline.blocks import BlockRunner, offloaded
from dllm_bench.pipeline.calibration import prepare_calibration, with_confidence
from dllm_bench.pipeline.context import BlockContext, ModelContext
from dllm_bench.pipeline.coverage import LayerCoverage, expert_coverage
from dllm_bench.pipeline.feed import HiddenCache
from dllm_bench.pipeline.lock import FolderLock
from dllm_bench.pipeline.log import write_log
from dllm_bench.pipeline.targets import check_fits, ignored_linears
from dllm_bench.pipeline.workdir import WorkDir, weights_digest
from dllm_bench.recipes import Recipe

__all__ = ["LOG_FILE", "QuantizeResult", "quantize_model"]

LOG_FILE = "quant_log.csv"
Plan = list[tuple[Method, Any]]


@dataclass
class QuantizeResult:
    """What `quantize_model` did.

    Attributes:
        dlm: the quantized model (the caller's object; on resume its ``model`` is the checkpointed one).
        recipe: the recipe that ran.
        rows: the per-module log (`dllm_bench.pipeline.log`).
        calibration: the calibration set's provenance plus ``num_states`` (None without calibration).
        seconds: wall time of the call.
        coverage: per routed layer of a mixture-of-experts model, the calibration tokens each expert's
            Hessian saw and the starved experts (`dllm_bench.pipeline.coverage`; empty otherwise).
    """

    dlm: DiffusionLM
    recipe: Recipe
    rows: list[LogRow]
    calibration: dict[str, Any] | None
    seconds: float = 0.0
    coverage: list[LayerCoverage] = field(default_factory=list)


def _fingerprint(dlm: DiffusionLM, recipe: Recipe, calibration: CalibrationSet | None) -> dict[str, Any]:
    given = (
        None if calibration is None else {**calibration.provenance.to_dict(), "num_states": len(calibration)}
    )
    return {
        "recipe": recipe.to_dict(),
        "model": dlm.config.to_dict(),
        "weights": weights_digest(dlm),
        "dtype": str(dlm.dtype),
        "calibration": given,
    }


@contextmanager
def _whole_model_on(dlm: DiffusionLM, device: torch.device) -> Iterator[None]:
    """The whole model on ``device`` (calibration builders and confidence scoring run it end to end)."""
    dlm.model.to(device)
    try:
        yield
    finally:
        dlm.model.to("cpu")


def _calibration(
    dlm: DiffusionLM,
    recipe: Recipe,
    given: CalibrationSet | None,
    work: WorkDir | None,
    device: torch.device,
    needs_confidence: bool,
    policy: ExpertPolicy,
    progress: bool,
) -> CalibrationSet:
    saved = work.calibration() if work is not None else None
    if saved is not None:
        return saved
    with _whole_model_on(dlm, device):
        cset = (
            given
            if given is not None
            else prepare_calibration(recipe.calibration, dlm, recipe.seed, progress)
        )
        if policy.reserve:
            cset = _with_reserve(cset, recipe, dlm, policy.reserve, progress)
        if needs_confidence:
            cset = with_confidence(dlm, cset, recipe.calibration.batch_size)
    if work is not None:
        work.save_calibration(cset)
    return cset


def _with_reserve(
    cset: CalibrationSet, recipe: Recipe, dlm: DiffusionLM, reserve: int, progress: bool
) -> CalibrationSet:
    """``cset`` followed by ``reserve`` states of the recipe's builder drawn with the next seed (the reserve
    of ``starved: targeted``; its draws may repeat some of the main set's states)."""
    spec = recipe.calibration
    if spec.path is not None:
        raise ValueError(
            "moe.starved 'targeted' draws extra calibration states with the recipe's builder, but this "
            "recipe reads a saved calibration set (calibration.path); use starved: shared or rtn, or a "
            "builder"
        )
    params = spec.params if "seed" not in spec.params else {**spec.params, "seed": spec.params["seed"] + 1}
    extra_spec = spec.model_copy(update={"params": params}).with_samples(reserve)
    extra = prepare_calibration(extra_spec, dlm, recipe.seed + 1, progress)
    note = f"the last {len(extra)} states are the reserve of starved: targeted (seed + 1)"
    return cset.with_states((*cset.states, *extra.states)).subset(range(len(cset) + len(extra)), note)


def _global_stage(context: ModelContext, steps: Plan, work: WorkDir | None) -> list[LogRow]:
    dlm = context.dlm
    if work is not None and work.progress()["global_done"]:
        return work.load_global(dlm)
    rows = [row for method, config in steps for row in method.apply(context, config)]
    context.run_deferred()
    if work is not None:
        work.save_global(dlm if steps else None, rows)
    return rows


def quantize_model(
    dlm: DiffusionLM,
    recipe: Recipe,
    *,
    device: torch.device | str = "cpu",
    work_dir: str | Path | None = None,
    calibration: CalibrationSet | None = None,
    progress: bool = True,
    on_block_done: Callable[[int], None] | None = None,
) -> QuantizeResult:
    """Quantize ``dlm`` in place with ``recipe`` (see the module docstring).

    Args:
        dlm: a float model (any dtype; kept on the CPU except for the block being quantized and the
            embedding, which sit on ``device`` during the block loop).
        recipe: what to do.
        device: where blocks compute (``"cpu"``, ``"cuda"``, ...).
        work_dir: checkpoint directory, locked for the call; a directory left by an interrupted run of the
            same recipe, model (config and weights), dtype and calibration is resumed, any other is
            refused (``dllm_bench.pipeline.workdir``). A ``quant_log.csv`` is kept there.
        calibration: use these states instead of the recipe's calibration spec.
        progress: show a tqdm bar over the blocks.
        on_block_done: called with the block index after each block is complete (and checkpointed).

    Returns:
        the `QuantizeResult`; block linears are ``QuantLinear`` (fake mode: the dequantized weight),
        wrapped in activation quantizers / online rotations where the recipe asks.

    Raises:
        ValueError: the work directory belongs to another run, is inconsistent (``SnapshotError``) or is
            in use by another process (``FolderBusyError``).
    """
    start_time = time.perf_counter()
    device = torch.device(device)
    with FolderLock(work_dir) if work_dir is not None else nullcontext(), torch.no_grad():
        plan = recipe.plan()
        ignored = ignored_linears(recipe, dlm)
        check_fits(recipe, dlm, ignored)
        dlm.model.to("cpu").eval().requires_grad_(False)
        work = WorkDir(work_dir, _fingerprint(dlm, recipe, calibration)) if work_dir is not None else None
        runner = BlockRunner(dlm, device)
        needs = [method.needs(config) for method, config in plan]
        cset = None
        policy = recipe.moe.policy() if isinstance(dlm.topology, MoETopology) else ExpertPolicy()
        if any(n.calibration for n in needs):
            confidence = any(n.confidence for n in needs)
            cset = _calibration(dlm, recipe, calibration, work, device, confidence, policy, progress)
        context = ModelContext(
            runner,
            cset,
            recipe.calibration.batch_size,
            recipe.scheme.weights.spec(),
            frozenset(ignored),
            recipe.true_sequential,
            policy,
        )
        global_steps = [(m, c) for m, c in plan if m.stage is Stage.GLOBAL]
        rows = _global_stage(context, global_steps, work)
        result = QuantizeResult(
            dlm,
            recipe,
            rows,
            None if cset is None else {**cset.provenance.to_dict(), "num_states": len(cset)},
        )
        block_steps = [(m, c) for m, c in plan if m.stage is not Stage.GLOBAL]
        _block_loop(result, context, block_steps, work, progress, on_block_done)
        result.coverage = expert_coverage(result.rows, dlm)
        if work is not None:
            write_log(result.rows, work.path / LOG_FILE)
    result.seconds = time.perf_counter() - start_time
    return result


def _restore_blocks(result: QuantizeResult, runner: BlockRunner, work: WorkDir, count: int) -> None:
    for index in range(count):
        result.rows.extend(work.load_block(runner.dlm, index))


def _quantize_block(context: BlockContext, steps: Plan) -> list[LogRow]:
    """The block's steps in plan order, then the actions they deferred; returns its log rows."""
    rows = [row for method, config in steps for row in method.apply(context, config)]
    context.run_deferred()
    return rows


def _block_loop(
    result: QuantizeResult,
    context: ModelContext,
    steps: Plan,
    work: WorkDir | None,
    progress: bool,
    on_block_done: Callable[[int], None] | None,
) -> None:
    runner, cset = context.runner, context.cset
    first = work.progress()["next_block"] if work is not None else 0
    if work is not None:
        _restore_blocks(result, runner, work, first)
    embedding = result.dlm.topology.embedding
    count = len(runner.blocks)
    with offloaded(embedding, runner.device):
        cache = None
        if cset is not None and first < count:
            cache = (
                work.load_inputs(first)
                if work is not None and first > 0
                else HiddenCache.embed(runner, cset, context.batch_size)
            )
        for index in tqdm(
            range(first, count),
            initial=first,
            total=count,
            desc="quantize",
            unit="block",
            disable=not progress,
        ):
            with offloaded(runner.blocks[index], runner.device):
                block_rows = _quantize_block(context.at_block(index, cache), steps)
                last = index + 1 == count
                next_cache = None if cache is None or last else cache.propagate(runner, index)
            if work is not None:
                work.save_block(runner.dlm, index, block_rows, next_cache)
            result.rows.extend(block_rows)
            cache = next_cache
            if on_block_done is not None:
                on_block_done(index)
