"""Train a tiny reference dLLM (LLaDA, Dream or LLaDA2 layout) from scratch on CPU.

    uv run python tools/train_tiny.py --arch llada --out runs/tiny-llada [--steps N] [--minutes M] [--seed S]
    OMP_NUM_THREADS=1 uv run python tools/train_tiny.py --arch llada2 --out runs/tiny-llada2

With no other option this is the shipped recipe (``RECIPES``); the shipped checkpoint is ``OUT-ema``.

Recipe (see docs/tiny_models.md): byte-level BPE tokenizer with single-digit tokens; arithmetic word
problems whose answers restate the operands and write each carry row (4 digits per number, least
significant first); a masked-diffusion loss on the answer (prompt never masked, EOS part of the answer)
with a stratified time per row. A ``--focus`` fraction of the rows masks only the computed tokens
(carries and results), a ``--copy-focus`` fraction masks every computed token and noises the operand
copies (the early states of generation), and ``--aux-batch`` extra answer-only rows per step train the
digit arithmetic at half the cost of a full row; ``--copy-weight`` weighs the loss of the masked operand
copies; one batch in ``--code-every`` is stdlib code with full-sequence masking (BOS kept); AdamW with
linear warm-up and cosine decay; bf16 autocast. Dream is trained through ``DiffusionLM.logits``, which
applies its one-position shift (the prediction for position i comes from hidden state i - 1). Every
``--eval-every`` steps the log gets the held-out accuracy (real sampler, default settings) and the
teacher-forced accuracy of each computed token and the free-running accuracy of the operand copies,
on 64 problems that are not among the 500 of the final evaluation. The checkpoint is written by
``dllm_sampler.save`` in bf16; with ``--ema`` a moving average of the weights is saved beside it
(``OUT-ema``).

LLaDA2 (``--arch llada2``, an `LLaDA2MoeConfig` with routed experts; see `model_config`) is trained by
block diffusion instead (``tools/tiny_llada2.py``): blocks of ``--block`` tokens, a mask ratio per block,
the noisy blocks seeing the clean earlier blocks under the block-causal mask, as its sampler
(`generate_block`) uses the model. No focus, copy or answer-only rows (``--focus``, ``--copy-focus`` and
``--aux-batch`` are ignored); the routers' ``expert_bias`` follows
the loads (`ExpertBalance`, ``--bias-rate``); the teacher-forced monitor (a bidirectional forward) is
skipped. ``--checkpoint-every`` writes ``OUT.resume.pt`` (model, optimizer, average, step; atomic) and
``--resume`` continues from it (the data streams are reseeded at the resumed step, so a resumed run is not
bit-identical to an uninterrupted one).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
from dllm_sampler import DreamConfig, LLaDA2MoeConfig, LLaDAConfig, forward_noise, llada_loss
from dllm_sampler.adapter import DiffusionLM
from dllm_sampler.atomic import atomic_file
from dllm_sampler.tasks import (
    ANSWER_TOKENS,
    Problem,
    answer_part_accuracy,
    answer_parts,
    character_accuracy,
    chunk_ids,
    computed_offsets,
    exact_accuracy,
    format_answer,
    generate_answers,
    heldout_problems,
    sft_batch,
    train_split,
)
from dllm_sampler.tasks.tokenizer import BOS, EOS, MASK, PAD, train_tokenizer
from tiny_llada2 import ExpertBalance, block_diffusion_batch
from tokenizers import Tokenizer

LLADA2_STEPS = 2000
"""The tiny-llada2 step cap: what one idle thread of the dev box runs in 38 minutes (1.05 steps/s alone;
about half that beside other jobs, so its schedule follows the wall clock, ``--schedule wall``)."""

_SHIPPED_RECIPE: dict[str, float | int | str] = {
    "minutes": 45.0,
    "steps": 4600,
    "schedule": "steps",
    "threads": 2,
    "ema": 0.995,
    "focus": 0.25,
    "copy_focus": 0.45,
    "copy_weight": 1.0,
}
RECIPES: dict[str, dict[str, float | int | str]] = {
    "llada": {**_SHIPPED_RECIPE, "seed": 2},
    "dream": {**_SHIPPED_RECIPE, "seed": 3},
    "llada2": {
        **_SHIPPED_RECIPE,
        "minutes": 38.0,
        "steps": LLADA2_STEPS,
        "schedule": "wall",
        "threads": 1,
        "focus": 0.0,
        "copy_focus": 0.0,
        "seed": 5,
    },
}
"""Per-layout defaults: the options the shipped checkpoints were trained with (docs/tiny_models.md). A
45-minute stop on a 4,600-step schedule that follows the step count (repeatable on one machine and thread
count; the dev box's two cores reached steps 4,128 and 4,578), the shares of focus and copy rows, the
copies' loss weight, the weight average that is shipped (``OUT-ema``), and the seed: the third LLaDA
seed and the fourth Dream seed tried with these shares."""

OPERAND_PARTS = ("a", "b", "c")
"""The answer parts (`answer_parts`) that restate the operands, copied from the word problem rather than
computed: weighted by ``--copy-weight`` and monitored as ``copies``."""

CURRICULUM = ((0.0, (2, 3)),)
"""(fraction of training, operand widths) stages. A short-operands-first curriculum was tried and slowed
learning (docs/tiny_models.md); the evaluated 2-3 digit operands are used from the start."""


def model_config(
    arch: str, vocab: int, ids: dict[str, int], args: argparse.Namespace
) -> LLaDAConfig | DreamConfig | LLaDA2MoeConfig:
    """The tiny shapes: hidden 256, head_dim 64 (4 heads), MLP 768 (3 * 2^8); Dream with GQA 4/2.

    LLaDA2 keeps the released layout at a small scale: GQA 4/2, fused qkv, q/k RMSNorm, RoPE on half of
    each head, the first layer dense (MLP 768), then 8 routed experts of width 128, top-2 within 2 of 4
    groups, sigmoid scores with ``expert_bias``, weights renormalised and scaled by 2.5, one shared expert
    of width 128."""
    common = {"mask_token_id": ids[MASK], "eos_token_id": ids[EOS], "pad_token_id": ids[PAD]}
    if arch == "llada2":
        return LLaDA2MoeConfig(
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.hidden // 64,
            num_key_value_heads=args.hidden // 128,
            head_dim=64,
            intermediate_size=args.mlp,
            moe_intermediate_size=args.mlp // 6,
            num_experts=8,
            num_experts_per_tok=2,
            n_group=4,
            topk_group=2,
            num_shared_experts=1,
            first_k_dense_replace=1,
            vocab_size=vocab,
            max_position_embeddings=512,
            rope_theta=10000.0,
            bos_token_id=ids[BOS],
            **common,
        )
    if arch == "llada":
        return LLaDAConfig(
            d_model=args.hidden,
            n_layers=args.layers,
            n_heads=args.hidden // 64,
            n_kv_heads=args.hidden // 64,
            mlp_hidden_size=args.mlp,
            vocab_size=vocab,
            embedding_size=vocab,
            max_sequence_length=512,
            rope_theta=10000.0,
            bos_token_id=ids[BOS],
            **common,
        )
    return DreamConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 128,
        intermediate_size=args.mlp,
        vocab_size=vocab,
        max_position_embeddings=512,
        rope_theta=10000.0,
        bos_token_id=ids[BOS],
        **common,
    )


def generation_defaults(arch: str, block: int = 32) -> dict:
    """generation_config.json of a tiny model: the sampler length the evaluation uses (one step per answer
    token, one block; LLaDA2: blocks of ``block``, at most one step per token, the model card's threshold
    algorithm) and the prompt conventions `dllmq generate` applies."""
    length: dict = {"steps": ANSWER_TOKENS + 1}
    if arch == "llada":
        length |= {"gen_length": ANSWER_TOKENS + 1, "block_length": ANSWER_TOKENS + 1}
    elif arch == "llada2":
        length = {"gen_length": ANSWER_TOKENS + 1, "block_length": block, "steps": block}
        length |= {"algorithm": "threshold", "threshold": 0.95, "temperature": 0.0}
    else:
        length |= {"max_new_tokens": ANSWER_TOKENS + 1}
    prompt = {"dllmq_prompt_template": "{prompt}\nA:", "dllmq_add_bos": True, "dllmq_task": "arithmetic"}
    return length | prompt


def learning_rate(progress: float, step: int, peak: float, warmup: int) -> float:
    """Linear warm-up over the first ``warmup`` steps, then cosine decay in ``progress`` (0 -> 1) from
    ``peak`` to ``peak / 10``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def masked_mean_loss(
    logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (logits [B, L, V], x0 and masked [B, L]); LLaDA's
    objective without the 1/t importance weight. ``weight`` [B, L] (optional) weights each position: the
    loss is then ``sum(w * ce) / sum(w)`` over the masked positions."""
    ce = torch.nn.functional.cross_entropy(logits[masked].float(), x0[masked], reduction="none")
    if weight is None:
        return ce.mean()
    w = weight[masked].to(ce.dtype)
    return (w * ce).sum() / w.sum()


def copy_weights(x0: torch.Tensor, columns: list[int], copy_weight: float) -> torch.Tensor:
    """Per-position loss weights [B, L] of arithmetic rows: ``copy_weight`` at the operand-copy
    ``columns`` (the restated a, b and c), 1 elsewhere."""
    weight = torch.ones(x0.shape, dtype=torch.float32, device=x0.device)
    weight[:, columns] = copy_weight
    return weight


class WeightAverage:
    """An exponential moving average of a model's parameters (fp32 shadow copies), with the usual warm-up
    ``decay_t = min(decay, (1 + t) / (10 + t))`` so the first steps do not freeze the random init."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: p.detach().float().clone() for k, p in model.named_parameters()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Blend the current parameters into the average."""
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in model.named_parameters():
            self.shadow[k].lerp_(p.detach().float(), 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Overwrite ``model``'s parameters with the average."""
        for k, p in model.named_parameters():
            p.copy_(self.shadow[k].to(p.dtype))


def arithmetic_noise(
    x0: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor,
    columns: list[int],
    focus: float,
    copy_focus: float,
    mask_id: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the usual answer noise ``masked`` of some SFT rows by the two structured kinds:

    - focus rows (a ``focus`` fraction): only the computed tokens are masked, each with its row's
      probability ``t`` [B]; the operand copies and separators stay visible. These are the states the
      low-confidence sampler reaches once it has committed the copies, so every masked result digit whose
      inputs are given is a clean example of digit arithmetic;
    - copy rows (a ``copy_focus`` fraction): every computed token is masked on top of the usual noise, the
      early states of generation, where the operands are copied from the prompt.

    Args:
        x0: clean SFT rows [B, L]; ``masked`` [B, L] bool is their usual noise.
        columns: the columns of the computed tokens, the same in every row (the answer is right-aligned).

    Returns:
        ``(noisy [B, L], masked [B, L] bool)``.
    """
    kind = torch.rand(x0.shape[0], generator=generator).to(x0.device)[:, None]
    draw = (torch.rand((x0.shape[0], len(columns)), generator=generator) < t[:, None].cpu()).to(x0.device)
    focus_masked = torch.zeros_like(masked)
    focus_masked[:, columns] = draw
    copy_masked = masked.clone()
    copy_masked[:, columns] = True
    focus_rows, copy_rows = kind < focus, (kind >= focus) & (kind < focus + copy_focus)
    masked = torch.where(focus_rows, focus_masked, torch.where(copy_rows, copy_masked, masked))
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


def answer_columns(x0: torch.Tensor, offsets: list[int]) -> list[int]:
    """Columns of ``x0`` (rows of `sft_batch`, left-padded so every answer ends the row) that hold the
    answer ``offsets`` (offsets inside `format_answer`'s text, one token per character)."""
    start = x0.shape[1] - (ANSWER_TOKENS + 1)
    return [start + p for p in offsets]


@torch.no_grad()
def teacher_forced(
    dlm: DiffusionLM, tokenizer: Tokenizer, problems: list[Problem], mask_id: int
) -> dict[str, list[float]]:
    """Teacher-forced top-1 accuracy of each computed token: for each group of ``ANSWER_WIDTH`` computed
    tokens (first carry row ``c1``, intermediate result ``r``, second carry row ``c2``, final result ``f``),
    that group is masked and every other answer token is given. Returns group -> accuracy per place."""
    x0, _, attention_mask = sft_batch(tokenizer, problems)
    out, parts = {}, answer_parts()
    for name, part in (("c1", "carries1"), ("r", "r"), ("c2", "carries2"), ("f", "f")):
        cols = answer_columns(x0, parts[part])
        noisy = x0.clone()
        noisy[:, cols] = mask_id
        pred = dlm.logits(noisy, attention_mask).argmax(-1)
        out[name] = [round((pred[:, c] == x0[:, c]).float().mean().item(), 3) for c in cols]
    return out


def operand_copy_accuracy(texts: list[str], problems: list[Problem]) -> dict[str, list[float]]:
    """Free-running accuracy of the restated operands ``a``, ``b``, ``c`` per place (least significant
    first): whether a run has learned to copy them from the word problem, which decides it
    (docs/tiny_models.md); the middle digit of a three-digit operand (place 1) is the copy that fails."""
    parts = answer_part_accuracy(texts, problems)
    return {name: [round(x, 3) for x in parts[name]] for name in OPERAND_PARTS}


def answer_only_rows(
    tokenizer: Tokenizer,
    problems: list[Problem],
    positions: list[int],
    ids: dict[str, int],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noised rows ``[bos] answer eos`` without the word problem: the operands and separators are given,
    the computed tokens and EOS are masked with a stratified time per row. Half as long as an SFT row, and
    with RoPE the digit circuit they train is the one the full rows use (same relative offsets).

    Returns:
        ``(x0 [B, L], noisy [B, L], masked [B, L] bool)`` with ``L = ANSWER_TOKENS + 2``.
    """
    answers = tokenizer.encode_batch([format_answer(p) for p in problems], add_special_tokens=False)
    x0 = torch.tensor([[ids[BOS], *a.ids, ids[EOS]] for a in answers])
    given = torch.ones_like(x0, dtype=torch.bool)
    given[:, [1 + p for p in positions]] = False
    given[:, -1] = False
    t = stratified_t(x0.shape[0], generator)
    noisy, masked, _ = forward_noise(x0, t, ids[MASK], given)
    return x0, noisy, masked


def stratified_t(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Times ``(u0 + j / B) mod 1`` for j < B: uniform marginals, evenly spread over the batch ([B])."""
    u0 = torch.rand((), generator=generator)
    return (u0 + torch.arange(batch) / batch) % 1.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=("llada", "dream", "llada2"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder (created)")
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps, the LR schedule's length (default: RECIPES)"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget (default: the arch's RECIPES entry); training stops there, and with "
        "--schedule wall the budget also drives the schedule (see --schedule)",
    )
    parser.add_argument(
        "--schedule",
        choices=("wall", "steps"),
        default=None,
        help="steps (RECIPES): the LR schedule follows step / steps only, so a rerun on the same machine and "
        "threads takes the same trajectory (set --steps to what fits in --minutes); wall: it follows "
        "max(step / steps, elapsed / budget) (the first shipped runs; not repeatable, docs/tiny_models.md)",
    )
    parser.add_argument("--seed", type=int, default=None, help="default: the arch's RECIPES entry")
    parser.add_argument(
        "--loss",
        choices=("masked_mean", "llada"),
        default="masked_mean",
        help="masked_mean: mean cross-entropy over masked tokens; llada: LLaDA's 1/t-weighted loss, whose "
        "weights (up to 1/eps) made batch-32 training too noisy to learn on this budget",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: RECIPES; <= 2 on the dev box)"
    )
    parser.add_argument("--batch", type=int, default=32, help="arithmetic problems per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--mlp", type=int, default=768)
    parser.add_argument(
        "--code-every", type=int, default=10, help="every k-th step is a code batch (0: none)"
    )
    parser.add_argument("--code-batch", type=int, default=16)
    parser.add_argument("--code-tokens", type=int, default=63, help="code chunk length (BOS is added)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", choices=("bf16", "none"), default="bf16")
    parser.add_argument(
        "--focus",
        type=float,
        default=None,
        help="fraction of arithmetic rows whose noise masks only the computed tokens (carries, results); "
        "default: the arch's RECIPES entry",
    )
    parser.add_argument(
        "--copy-focus",
        type=float,
        default=None,
        help="fraction of arithmetic rows with every computed token masked and the rest noised as usual: "
        "the early states of generation, where the operands are copied from the prompt; default: the "
        "arch's RECIPES entry",
    )
    parser.add_argument(
        "--copy-weight",
        type=float,
        default=None,
        help="loss weight of the masked operand-copy tokens of arithmetic rows (others weigh 1; "
        "masked_mean loss only); default: the arch's RECIPES entry",
    )
    parser.add_argument(
        "--ema",
        type=float,
        default=None,
        help="if > 0, also keep an exponential moving average of the weights with this decay and save it "
        "beside the checkpoint as OUT-ema (same format); 0: none (default: RECIPES)",
    )
    parser.add_argument(
        "--aux-batch",
        type=int,
        default=64,
        help="extra answer-only rows per arithmetic step ([bos] answer eos, operands given, computed masked)",
    )
    parser.add_argument("--block", type=int, default=32, help="llada2: block length of block diffusion")
    parser.add_argument(
        "--bias-rate", type=float, default=5e-3, help="llada2: expert_bias step per optimizer step"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=100, help="steps between OUT.resume.pt writes (0: none)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT.resume.pt")
    args = parser.parse_args()
    for key, value in RECIPES[args.arch].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 0.0 <= args.ema < 1.0:
        parser.error(f"--ema is a decay in [0, 1) (0: no average), got {args.ema}")
    if args.copy_weight <= 0.0:
        parser.error(f"--copy-weight must be > 0, got {args.copy_weight}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    log_path = args.out.with_name(args.out.name + ".train_log.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("a" if args.resume else "w")

    def log(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    tokenizer = train_tokenizer()
    ids = {tok: tokenizer.token_to_id(tok) for tok in (PAD, BOS, EOS, MASK)}
    config = model_config(args.arch, tokenizer.get_vocab_size(), ids, args)
    dlm = DiffusionLM.from_config(config, seed=args.seed, tokenizer=tokenizer, device=args.device)
    n_params = sum(p.numel() for p in dlm.model.parameters())
    log({"event": "start", "args": {k: str(v) for k, v in vars(args).items()}, "params": n_params})

    code = chunk_ids(lambda s: tokenizer.encode(s, add_special_tokens=False).ids, "train", args.code_tokens)
    code_rng = random.Random(args.seed)
    monitor = heldout_problems(564)[500:]
    focus_positions = computed_offsets()
    parts = answer_parts()
    copy_positions = sorted(offset for name in OPERAND_PARTS for offset in parts[name])
    streams = {digits: train_split(args.seed * 1000 + i, digits) for i, (_, digits) in enumerate(CURRICULUM)}
    noise_gen = torch.Generator().manual_seed(args.seed)

    decay = [p for p in dlm.model.parameters() if p.dim() >= 2]
    no_decay = [p for p in dlm.model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    average = WeightAverage(dlm.model, args.ema) if args.ema > 0 else None
    balance = ExpertBalance(dlm.model, args.bias_rate) if args.arch == "llada2" else None
    special = {"pad": ids[PAD], "eos": ids[EOS], "mask": ids[MASK]}
    resume_path = args.out.with_name(args.out.name + ".resume.pt")
    start = time.time()
    tokens_seen, done = 0, 0
    if args.resume:
        state = torch.load(resume_path, weights_only=False)
        dlm.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if average is not None:
            average.shadow, average.updates = state["average"], state["average_updates"]
        done, start = state["step"], start - state["elapsed_s"]
        streams = {d: train_split(args.seed * 1000 + done + i, d) for i, (_, d) in enumerate(CURRICULUM)}
        code_rng = random.Random(args.seed + done)
        noise_gen.manual_seed(args.seed + done)
        log({"event": "resume", "step": done})
    for step in range(done, args.steps):
        budget_used = (time.time() - start) / (args.minutes * 60)
        if budget_used >= 1.0:
            log({"event": "time_cap", "step": step, "minutes": args.minutes})
            break
        progress = step / args.steps if args.schedule == "steps" else max(step / args.steps, budget_used)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(progress, step, args.lr, args.warmup)
        is_code = args.code_every > 0 and step % args.code_every == args.code_every - 1
        if is_code:
            rows = [[ids[BOS], *code[code_rng.randrange(len(code))]] for _ in range(args.code_batch)]
            x0 = torch.tensor(rows)
            prompt_mask = torch.zeros_like(x0, dtype=torch.bool)
            prompt_mask[:, 0] = True
            attention_mask = None
        else:
            digits = next(d for frac, d in reversed(CURRICULUM) if progress >= frac)
            problems = [next(streams[digits]) for _ in range(args.batch)]
            x0, prompt_mask, attention_mask = sft_batch(tokenizer, problems)
            attention_mask = attention_mask.to(args.device)
        x0, prompt_mask = x0.to(args.device), prompt_mask.to(args.device)
        autocast = torch.autocast(
            device_type=x0.device.type, dtype=torch.bfloat16, enabled=args.autocast == "bf16"
        )
        if args.arch == "llada2":
            shift = 0 if is_code else int(torch.randint(args.block, (), generator=noise_gen))
            batch = block_diffusion_batch(
                x0, prompt_mask, attention_mask, special, args.block, shift, noise_gen
            )
            with autocast:
                logits = dlm.model(batch.input_ids, allowed=batch.allowed, positions=batch.positions)
            loss = masked_mean_loss(logits[:, batch.clean_length :], batch.target, batch.masked)
        else:
            t = stratified_t(x0.shape[0], noise_gen).to(args.device)
            noisy, masked, p_mask = forward_noise(x0, t, ids[MASK], prompt_mask)
            if not is_code and args.focus + args.copy_focus > 0:
                noisy, masked = arithmetic_noise(
                    x0,
                    masked,
                    t,
                    answer_columns(x0, focus_positions),
                    args.focus,
                    args.copy_focus,
                    ids[MASK],
                    noise_gen,
                )
            aux = None
            if not is_code and args.aux_batch > 0:
                aux_problems = [next(streams[digits]) for _ in range(args.aux_batch)]
                aux = [
                    r.to(args.device)
                    for r in answer_only_rows(tokenizer, aux_problems, focus_positions, ids, noise_gen)
                ]
            with autocast:
                logits = dlm.logits(noisy, attention_mask)
                aux_logits = None if aux is None else dlm.logits(aux[1])
            if args.loss == "llada":
                loss = llada_loss(logits, x0, masked, p_mask, "tokens" if is_code else "answer", prompt_mask)
            else:
                weight = None
                if not is_code and args.copy_weight != 1.0:
                    weight = copy_weights(x0, answer_columns(x0, copy_positions), args.copy_weight)
                loss = masked_mean_loss(logits, x0, masked, weight)
            if aux is not None:
                loss = loss + masked_mean_loss(aux_logits, aux[0], aux[2])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dlm.model.parameters(), 1.0)
        optimizer.step()
        if balance is not None:
            balance.update()
        if average is not None:
            average.update(dlm.model)
        tokens_seen += x0.numel()
        done = step + 1
        if args.checkpoint_every > 0 and done % args.checkpoint_every == 0:
            with atomic_file(resume_path, "wb") as handle:
                state = {"model": dlm.model.state_dict(), "optimizer": optimizer.state_dict(), "step": done}
                state["elapsed_s"] = time.time() - start
                if average is not None:
                    state["average"], state["average_updates"] = average.shadow, average.updates
                torch.save(state, handle)

        if step % args.log_every == 0:
            elapsed = time.time() - start
            log(
                {
                    "step": step,
                    "loss": round(loss.item(), 4),
                    "kind": "code" if is_code else "arith",
                    "lr": round(optimizer.param_groups[0]["lr"], 6),
                    "elapsed_s": round(elapsed, 1),
                    "steps_per_s": round((step + 1) / elapsed, 3),
                    "tokens_per_s": round(tokens_seen / elapsed, 1),
                }
                | ({} if balance is None else {"expert_load": balance.report()})
            )
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            dlm.model.eval()
            texts = generate_answers(dlm, monitor)
            forced = None if args.arch == "llada2" else teacher_forced(dlm, tokenizer, monitor, ids[MASK])
            dlm.model.train()
            exact = exact_accuracy(texts, monitor)
            log(
                {
                    "event": "eval",
                    "step": step + 1,
                    "accuracy": exact,
                    "char_accuracy": round(character_accuracy(texts, monitor), 4),
                    "teacher_forced": forced,
                    "copies": operand_copy_accuracy(texts, monitor),
                }
            )

    log({"event": "done", "steps": done, "elapsed_s": round(time.time() - start, 1)})
    log_file.close()
    from dllm_sampler import save

    dlm.to(torch.bfloat16)
    dlm.tokenizer_files["generation_config.json"] = generation_defaults(args.arch, args.block)
    save(dlm, args.out, overwrite=True)
    shutil.copy(log_path, args.out / "train_log.jsonl")
    if average is not None:
        average.copy_to(dlm.model)  # rounded to bf16 like the raw weights
        ema_out = args.out.with_name(args.out.name + "-ema")
        save(dlm, ema_out, overwrite=True)
        shutil.copy(log_path, ema_out / "train_log.jsonl")


if __name__ == "__main__":
    main()
