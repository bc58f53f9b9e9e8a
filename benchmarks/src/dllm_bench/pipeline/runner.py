"""`quantize_model`: the sequential layer-wise pipeline that runs a `Recipe` on a model.

Order of work (see docs/methods.md for the reasons):

1. calibration: build or load the states (TMAS runs the float model's sampler); score the float model's
   confidence when CGQ needs it;
2. global stage: whole-model transforms (QuaRot, SmoothQuant, DuQuant) in recipe order, on float
   statistics;
3. capture: the embedding output of every calibration batch is the first block's input;
4. for each block, on the accelerator alone (the rest of the model stays on the CPU): AWQ, IA-AQ, the
   weight quantizer stage by stage (q/k/v, o, gate/up, down), activation quantizers, the V quantizer;
   then the batches are propagated through the quantized block to give the next block's inputs.

With a work directory every completed block is checkpointed and a later call with the same arguments
resumes after the last completed block (`dllm_bench.pipeline.workdir`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from dllm_actquant import VQuantConfig, VQuantHandle, VQuantParams, attach_v_quantizers
from dllm_calib import CalibrationSet
from dllm_sampler import DiffusionLM
from dllm_weightquant import CGQConfig, get_method
from tqdm import tqdm

from dllm_bench.pipeline.block_steps import BlockContext, run_act_quant, run_awq, run_iaaq, run_quantizer
from dllm_bench.pipeline.blocks import BlockRunner, offloaded
from dllm_bench.pipeline.calibration import prepare_calibration, with_confidence
from dllm_bench.pipeline.feed import HiddenCache
from dllm_bench.pipeline.global_steps import apply_global_step
from dllm_bench.pipeline.log import LogRow, write_log
from dllm_bench.pipeline.targets import check_fits, ignored_linears
from dllm_bench.pipeline.workdir import BlockCheckpoint, WorkDir
from dllm_bench.recipes import Recipe, build_config

__all__ = ["LOG_FILE", "QuantizeResult", "quantize_model"]

LOG_FILE = "quant_log.csv"
_STATISTIC_TRANSFORMS = ("smoothquant", "duquant", "awq", "iaaq")


@dataclass
class QuantizeResult:
    """What `quantize_model` did.

    Attributes:
        dlm: the quantized model (the caller's object; on resume its ``model`` is the checkpointed one).
        recipe: the recipe that ran.
        rows: the per-module log (`dllm_bench.pipeline.log`).
        calibration: the calibration set's provenance plus ``num_states`` (None without calibration).
        vquant_config: the V quantizer of IA-AQ, None when V is not quantized.
        vquant: block index -> the V quantizer parameters attached to that block.
        seconds: wall time of the call.
    """

    dlm: DiffusionLM
    recipe: Recipe
    rows: list[LogRow]
    calibration: dict[str, Any] | None
    vquant_config: VQuantConfig | None = None
    vquant: dict[int, VQuantParams] = field(default_factory=dict)
    seconds: float = 0.0


def _active_steps(recipe: Recipe) -> list[Any]:
    """The recipe's steps that apply at its scheme (activation steps need quantized activations)."""
    act = recipe.scheme.quantizes_activations
    return [s for s in recipe.steps if act or s.stage not in ("vquant", "activations")]


def _needs_statistics(recipe: Recipe) -> bool:
    return any(
        s.method in _STATISTIC_TRANSFORMS or (s.stage == "quantizer" and get_method(s.method).needs_hessian)
        for s in _active_steps(recipe)
    )


def _fingerprint(dlm: DiffusionLM, recipe: Recipe, calibration: CalibrationSet | None) -> dict[str, Any]:
    given = (
        None if calibration is None else {**calibration.provenance.to_dict(), "num_states": len(calibration)}
    )
    return {
        "recipe": recipe.to_dict(),
        "model": dlm.config.to_dict(),
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
    dlm: DiffusionLM, recipe: Recipe, given: CalibrationSet | None, work: WorkDir | None, device: torch.device
) -> CalibrationSet:
    saved = work.calibration() if work is not None else None
    if saved is not None:
        return saved
    quantizer = recipe.quantizer.config(recipe.seed)
    needs_confidence = isinstance(quantizer, CGQConfig) and quantizer.confidence_exponent is not None
    with _whole_model_on(dlm, device):
        cset = given if given is not None else prepare_calibration(recipe.calibration, dlm, recipe.seed)
        if needs_confidence:
            cset = with_confidence(dlm, cset, recipe.calibration.batch_size)
    if work is not None:
        work.save_calibration(cset)
    return cset


def _global_stage(
    dlm: DiffusionLM, recipe: Recipe, runner: BlockRunner, cset: CalibrationSet | None, work: WorkDir | None
) -> list[LogRow]:
    if work is not None and work.progress()["global_done"]:
        model, rows = work.load_global()
        if model is not None:
            dlm.model = model
        return rows
    steps = recipe.steps_in("global")
    rows = [
        apply_global_step(s, s.config(recipe.seed), dlm, runner, cset, recipe.calibration.batch_size)
        for s in steps
    ]
    if work is not None:
        work.save_global(dlm.model if steps else None, rows)
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
        work_dir: checkpoint directory; a directory left by an interrupted run of the same recipe, model
            and calibration is resumed. A ``quant_log.csv`` is kept there.
        calibration: use these states instead of the recipe's calibration spec.
        progress: show a tqdm bar over the blocks.
        on_block_done: called with the block index after each block is complete (and checkpointed).

    Returns:
        the `QuantizeResult`; block linears are ``QuantLinear`` (fake mode: the dequantized weight),
        wrapped in activation quantizers / online rotations where the recipe asks.
    """
    start_time = time.perf_counter()
    device = torch.device(device)
    ignored = ignored_linears(recipe, dlm)
    check_fits(recipe, dlm, ignored)
    dlm.model.to("cpu").eval().requires_grad_(False)
    work = WorkDir(work_dir, _fingerprint(dlm, recipe, calibration)) if work_dir is not None else None
    runner = BlockRunner(dlm, device)
    active = {s.method: s for s in _active_steps(recipe)}
    act_bits = recipe.scheme.activations if recipe.scheme.quantizes_activations else 8
    configs = {m: s.config(recipe.seed, act_bits) for m, s in active.items()}
    if recipe.scheme.quantizes_activations and "act_quant" not in configs:
        configs["act_quant"] = build_config("act_quant", {}, act_bits=act_bits)  # the scheme asks for it

    with torch.no_grad():
        cset = _calibration(dlm, recipe, calibration, work, device) if _needs_statistics(recipe) else None
        rows = _global_stage(dlm, recipe, runner, cset, work)
        result = QuantizeResult(
            dlm,
            recipe,
            rows,
            None if cset is None else {**cset.provenance.to_dict(), "num_states": len(cset)},
            vquant_config=configs["iaaq"].vquant if "iaaq" in configs else None,
        )
        _block_loop(result, runner, cset, configs, ignored, work, progress, on_block_done)
    if work is not None:
        write_log(result.rows, work.path / LOG_FILE)
    result.seconds = time.perf_counter() - start_time
    return result


def _restore_blocks(result: QuantizeResult, runner: BlockRunner, work: WorkDir, count: int) -> None:
    for index in range(count):
        checkpoint = work.load_block(index)
        runner.blocks[index] = checkpoint.module
        if checkpoint.vquant is not None:
            _attach_v(result, index, checkpoint.vquant)
        result.rows.extend(checkpoint.rows)


def _attach_v(result: QuantizeResult, index: int, params: VQuantParams) -> VQuantHandle:
    assert result.vquant_config is not None
    result.vquant[index] = params
    return attach_v_quantizers(result.dlm, result.vquant_config, {index: params})


def _quantize_block(
    ctx: BlockContext, result: QuantizeResult, configs: dict[str, Any]
) -> tuple[list[LogRow], VQuantParams | None, VQuantHandle | None]:
    """The steps of one block in pipeline order; returns its log rows and its attached V quantizer."""
    recipe = result.recipe
    rows: list[LogRow] = []
    vparams = None
    if "awq" in configs:
        rows += run_awq(ctx, configs["awq"])
    if "iaaq" in configs and ctx.block.names["v"] not in ctx.ignored:
        vparams, row = run_iaaq(ctx, configs["iaaq"])
        rows.append(row)
    quantizer = recipe.quantizer.method
    rows += run_quantizer(ctx, quantizer, configs[quantizer], recipe.true_sequential)
    if "act_quant" in configs:
        rows += run_act_quant(ctx, configs["act_quant"])
    handle = None if vparams is None else _attach_v(result, ctx.index, vparams)
    return rows, vparams, handle


def _block_loop(
    result: QuantizeResult,
    runner: BlockRunner,
    cset: CalibrationSet | None,
    configs: dict[str, Any],
    ignored: set[str],
    work: WorkDir | None,
    progress: bool,
    on_block_done: Callable[[int], None] | None,
) -> None:
    dlm, recipe = result.dlm, result.recipe
    first = work.progress()["next_block"] if work is not None else 0
    if work is not None:
        _restore_blocks(result, runner, work, first)
    spec = recipe.scheme.weights.spec()
    batch_size = recipe.calibration.batch_size
    embedding = dlm.topology.embedding
    count = len(runner.blocks)
    with offloaded(embedding, runner.device):
        cache = None
        if cset is not None and first < count:
            cache = (
                work.load_inputs(first)
                if work is not None and first > 0
                else HiddenCache.embed(runner, cset, batch_size)
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
                ctx = BlockContext(dlm, runner, cset, cache, index, spec, ignored, batch_size)
                block_rows, vparams, handle = _quantize_block(ctx, result, configs)
                last = index + 1 == count
                next_cache = None if cache is None or last else cache.propagate(runner, index)
            if work is not None:
                if handle is not None:
                    handle.remove()  # hooks are closures: checkpoint the module without them
                work.save_block(index, BlockCheckpoint(runner.blocks[index], vparams, block_rows), next_cache)
                if handle is not None:
                    _attach_v(result, index, vparams)  # type: ignore[arg-type]
            result.rows.extend(block_rows)
            cache = next_cache
            if on_block_done is not None:
                on_block_done(index)
