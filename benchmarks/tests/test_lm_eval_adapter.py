"""The lm-eval model adapter ``dllmq`` on the shipped tiny LLaDA and Dream models.

No accuracy is assumed (the tiny models are being retrained): the tests check registration, argument
handling, the protocol defaults, the types and determinism of the answers, the greedy check against an
independent reference, Dream's EOS convention and the stop-string cut. lm-eval's ``simple_evaluate`` is not
run (no task data can be downloaded here); requests are built as lm-eval's tasks build them.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("lm_eval")

from dllm_bench import lm_eval_adapter as adapter
from dllm_sampler import DreamGenerationConfig, LLaDAGenerationConfig, generate
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import get_model

# benchmarks/tests has no conftest.py yet; these match the packages' profiles.

TINY_ARGS = "mc_num=8,batch_size=4,steps=4,gen_length=4,dtype=float32,device=cpu"
QUESTION = "What is 12+7?\nA:"


@pytest.fixture(scope="module")
def lms() -> dict[str, adapter.DllmqLM]:
    """The adapter as lm-eval builds it from ``--model dllmq --model_args ...``, per shipped model."""
    build = get_model("dllmq").create_from_arg_string
    return {name: build(f"pretrained={name},{TINY_ARGS}") for name in ("tiny-llada", "tiny-dream")}


@pytest.fixture(params=["tiny-llada", "tiny-dream"])
def lm(request: pytest.FixtureRequest, lms: dict[str, adapter.DllmqLM]) -> adapter.DllmqLM:
    return lms[request.param]


def _ll_request(context: str, continuation: str, idx: int = 0) -> Instance:
    return Instance("loglikelihood", {"q": context}, (context, continuation), idx, ("arith", 0, 1))


def _gen_request(context: str, until: list[str]) -> Instance:
    kwargs = {"until": until, "max_gen_toks": 256, "do_sample": False}
    return Instance("generate_until", {"q": context}, (context, kwargs), 0, ("arith", 0, 1))


def _llada_greedy_reference(dlm, prefix: list[int], length: int) -> list[int]:
    """LLaDA's ``suffix_greedy_prediction``: unmask the single most confident argmax per step."""
    seq = torch.full((1, len(prefix) + length), dlm.mask_token_id, dtype=torch.long)
    seq[0, : len(prefix)] = torch.tensor(prefix)
    for _ in range(length):
        masked = (seq[0] == dlm.mask_token_id).nonzero().squeeze(1)
        logits = dlm.logits(seq)[0, masked].float()
        tokens = logits.argmax(dim=-1)
        confidence = torch.softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(1)
        best = int(confidence.argmax())
        seq[0, masked[best]] = tokens[best]
    return seq[0, len(prefix) :].tolist()


def _greedy_reference(lm: adapter.DllmqLM, prefix: list[int], length: int) -> list[int]:
    if lm.dlm.arch == "llada":
        return _llada_greedy_reference(lm.dlm, prefix, length)
    config = DreamGenerationConfig(max_new_tokens=length, steps=length, alg="entropy", top_p=0.95)
    return generate(lm.dlm, torch.tensor([prefix]), config=config)[0, len(prefix) :].tolist()


def _corrupt(ids: list[int]) -> list[int]:
    """Every token replaced by a different ordinary token (ids 4 and 5 are plain bytes)."""
    return [5 if t == 4 else 4 for t in ids]


# ----- registration, construction and settings ---------------------------------------------------------


def test_dllmq_is_registered_next_to_the_builtin_models() -> None:
    assert get_model("dllmq") is adapter.DllmqLM
    assert issubclass(get_model("dummy"), LM)  # the lazy built-in entries still resolve


def test_create_from_arg_string_builds_the_model(lm: adapter.DllmqLM) -> None:
    s = lm.settings
    assert isinstance(lm, adapter.DllmqLM)
    assert (s.mc_num, s.batch_size, s.is_check_greedy, s.gen_length) == (8, 4, False, 4)
    expected = LLaDAGenerationConfig if lm.dlm.arch == "llada" else DreamGenerationConfig
    assert isinstance(s.sampler, expected)
    assert lm.dlm.dtype == torch.float32
    assert lm.get_model_info()["mc_num"] == 8


def test_harness_arguments_fill_in_but_model_args_win() -> None:
    merged = adapter.merge_model_args(
        {"pretrained": "m", "batch_size": 16},
        {"batch_size": 1, "device": "cuda", "max_batch_size": None, "trust_remote_code": True},
    )
    assert merged == {"pretrained": "m", "batch_size": 16, "device": "cuda"}
    only_model = adapter.merge_model_args({"pretrained": "m", "trust_remote_code": True}, None)
    assert only_model == {"pretrained": "m"}
    with pytest.raises(ValueError, match="unexpected harness argument"):
        adapter.merge_model_args({}, {"revision": "main"})


def test_create_from_arg_obj_takes_the_harness_batch_size() -> None:
    harness = {"batch_size": "8", "max_batch_size": None, "device": "cpu"}
    lm = get_model("dllmq").create_from_arg_obj({"pretrained": "tiny-llada", "mc_num": 16}, harness)
    assert lm.settings.batch_size == 8
    assert str(lm.device) == "cpu"


def test_defaults_reproduce_the_protocol(lm: adapter.DllmqLM) -> None:
    s = adapter.build_settings(lm.dlm)
    assert (s.mc_num, s.batch_size, s.is_check_greedy, s.cfg, s.seed) == (128, 32, False, 0.0, 1234)
    assert s.max_length == 512  # min(protocol 4096 / 2048, the tiny models' 512 positions)
    assert s.add_bos_token  # the tiny folders ask for BOS
    assert not s.escape_until
    if lm.dlm.arch == "llada":
        assert s.sampler == LLaDAGenerationConfig(
            steps=1024, gen_length=1024, block_length=1024, temperature=0.0, cfg_scale=0.0
        )
        assert s.sampler.remasking == "low_confidence"
        assert not s.append_eos
    else:
        assert s.sampler == DreamGenerationConfig(
            max_new_tokens=128, steps=512, alg="entropy", alg_temp=0.0, temperature=0.0, top_p=0.95
        )
        assert s.append_eos


def test_llada_steps_and_block_length_follow_gen_length() -> None:
    config = adapter.sampler_config("llada", gen_length=256)
    assert (config.steps, config.gen_length, config.block_length) == (256, 256, 256)
    config = adapter.sampler_config("llada", gen_length=256, steps=128, block_length=32, cfg=0.5)
    assert (config.steps, config.block_length, config.cfg_scale) == (128, 32, 0.5)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="alg only apply to Dream"):
        adapter.sampler_config("llada", alg="entropy")
    with pytest.raises(ValueError, match="block_length only apply to LLaDA"):
        adapter.sampler_config("dream", block_length=8)
    with pytest.raises(ValueError, match="must be a multiple of block_length"):
        adapter.sampler_config("llada", gen_length=10, block_length=4)
    sampler = adapter.sampler_config("llada")
    with pytest.raises(ValueError, match="multiple of batch_size"):
        adapter.AdapterSettings(sampler=sampler, mc_num=12, batch_size=8)
    with pytest.raises(ValueError, match="mc_num must be a positive int"):
        adapter.AdapterSettings(sampler=sampler, mc_num=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        adapter.parse_dtype("fp8")
    assert adapter.parse_dtype("auto") is None
    assert adapter.parse_dtype("bfloat16") is torch.bfloat16
    assert adapter.parse_dtype(None, "cpu") is torch.float32  # bf16 is several times slower on a CPU
    assert adapter.parse_dtype(None, "cuda:0") is torch.bfloat16
    with pytest.raises(TypeError, match="mcnum"):
        get_model("dllmq").create_from_arg_string("pretrained=tiny-llada,mcnum=8")


def test_max_length_past_the_models_positions_is_refused(lm: adapter.DllmqLM) -> None:
    limit = adapter.default_max_length(lm.dlm)
    assert adapter.build_settings(lm.dlm, max_length=limit).max_length == limit
    with pytest.raises(
        ValueError, match=rf"max_length={limit + 1} is more than the model's maximum of {limit}"
    ):
        adapter.build_settings(lm.dlm, max_length=limit + 1)


# ----- tokenization ------------------------------------------------------------------------------------


def test_encode_pair_moves_trailing_space_and_adds_bos_once(lm: adapter.DllmqLM) -> None:
    dlm = lm.dlm
    prefix, target = adapter.encode_pair(dlm, "What is 1+1 =", " 2", add_bos=True)
    assert adapter.encode_pair(dlm, "What is 1+1 = ", "2", add_bos=True) == (prefix, target)
    assert prefix[0] == dlm.bos_token_id and dlm.bos_token_id not in prefix[1:]
    assert prefix + target == adapter.encode_context(dlm, "What is 1+1 = 2", add_bos=True)
    assert adapter.encode_pair(dlm, "What is 1+1 =", " 2", add_bos=False)[0] == prefix[1:]
    with pytest.raises(ValueError, match="encodes to no tokens"):
        adapter.encode_pair(dlm, "abc", "", add_bos=True)


@given(
    prefix=st.lists(st.integers(0, 9), max_size=12),
    target=st.lists(st.integers(0, 9), min_size=1, max_size=12),
    max_length=st.integers(1, 30),
)
def test_fit_to_length_keeps_the_target_and_the_latest_context(
    prefix: list[int], target: list[int], max_length: int
) -> None:
    if len(target) > max_length:
        with pytest.raises(ValueError, match="max_length"):
            adapter.fit_to_length(prefix, target, max_length)
        return
    kept, same = adapter.fit_to_length(prefix, target, max_length)
    assert same == target
    assert len(kept) == min(len(prefix), max_length - len(target))
    assert kept == prefix[len(prefix) - len(kept) :]


# ----- loglikelihood -----------------------------------------------------------------------------------


def test_loglikelihood_gives_finite_deterministic_pairs(lm: adapter.DllmqLM) -> None:
    requests = [
        _ll_request(QUESTION, " 19", 0),  # correct arithmetic answer
        _ll_request(QUESTION, " 91", 1),  # corrupted answer
        _ll_request("", "12+7=19", 2),  # empty context
        _ll_request("Q: 3+4 = ", "7", 3),  # trailing space in the context
    ]
    first = lm.loglikelihood(requests, disable_tqdm=True)
    assert len(first) == len(requests)
    for ll, greedy in first:
        assert type(ll) is float and type(greedy) is bool
        assert math.isfinite(ll) and ll <= 0.0  # an ELBO is a sum of cross-entropies / p_mask
    assert all(greedy is False for _, greedy in first)  # is_check_greedy is off by default
    assert lm.loglikelihood(requests[::-1], disable_tqdm=True) == first[::-1]  # same seed, any order
    prefix, target = adapter.encode_pair(lm.dlm, QUESTION, " 19", lm.settings.add_bos_token)
    assert adapter.score_continuation(lm.dlm, prefix, target, lm.settings) == first[0]


def test_another_seed_gives_another_estimate(lm: adapter.DllmqLM) -> None:
    prefix, target = adapter.encode_pair(lm.dlm, QUESTION, " 19", True)
    reseeded = dataclasses.replace(lm.settings, seed=lm.settings.seed + 1)
    ll, _ = adapter.score_continuation(lm.dlm, prefix, target, lm.settings)
    other, _ = adapter.score_continuation(lm.dlm, prefix, target, reseeded)
    assert math.isfinite(other) and other != ll


def test_dream_appends_eos_so_every_continuation_token_is_scored(lms: dict[str, adapter.DllmqLM]) -> None:
    """Dream's estimator never masks the last position: without the EOS a 1-token answer scores 0."""
    lm = lms["tiny-dream"]
    prefix, target = adapter.encode_pair(lm.dlm, "Q: 3+4 =", " 7", True)
    ll, _ = adapter.score_continuation(lm.dlm, prefix, target[-1:], lm.settings)
    assert ll < 0.0
    without_eos = dataclasses.replace(lm.settings, append_eos=False)
    assert adapter.score_continuation(lm.dlm, prefix, target[-1:], without_eos)[0] == 0.0


def test_greedy_check_matches_the_reference(lm: adapter.DllmqLM, monkeypatch: pytest.MonkeyPatch) -> None:
    checked = dataclasses.replace(lm.settings, is_check_greedy=True)
    monkeypatch.setattr(lm, "settings", checked)  # as model_args is_check_greedy=true would set it
    prefix = adapter.encode_context(lm.dlm, QUESTION, add_bos=True)
    greedy = _greedy_reference(lm, prefix, 4)
    assert adapter.greedy_continuation(lm.dlm, prefix, 4, checked) == greedy
    assert adapter.score_continuation(lm.dlm, prefix, greedy, checked)[1] is True
    assert adapter.score_continuation(lm.dlm, prefix, _corrupt(greedy), checked)[1] is False

    # Through lm-eval's request objects: text continuations are re-tokenized after the context, so the
    # flag must equal the reference on whatever tokens the continuation text becomes.
    texts = [lm.dlm.decode(greedy), lm.dlm.decode(_corrupt(greedy))]
    results = lm.loglikelihood([_ll_request(QUESTION, t, i) for i, t in enumerate(texts)], disable_tqdm=True)
    for text, (_, flag) in zip(texts, results, strict=True):
        prefix, target = adapter.encode_pair(lm.dlm, QUESTION, text, True)
        assert flag == (_greedy_reference(lm, prefix, len(target)) == target)
    assert results[1][1] is False


def test_loglikelihood_rolling_is_not_part_of_the_protocol(lm: adapter.DllmqLM) -> None:
    request = Instance("loglikelihood_rolling", {}, ("some text",), 0)
    with pytest.raises(NotImplementedError, match="elbo_nll_per_token"):
        lm.loglikelihood_rolling([request])


# ----- generate_until ----------------------------------------------------------------------------------


def test_generate_until_returns_text_cut_at_the_stop_strings(lm: adapter.DllmqLM) -> None:
    requests = [_gen_request(QUESTION, ["\n"]), _gen_request("Q: 3+4 =", ["\n", "1"])]
    out = lm.generate_until(requests, disable_tqdm=True)
    assert len(out) == 2 and all(isinstance(text, str) for text in out)
    assert "\n" not in out[0] and "\n" not in out[1] and "1" not in out[1]
    assert lm.generate_until(requests, disable_tqdm=True) == out
    assert out[0] == adapter.generate_text(lm.dlm, QUESTION, ["\n"], lm.settings)
    uncut = adapter.generate_text(lm.dlm, QUESTION, [], lm.settings)
    assert uncut.startswith(out[0])


def test_finish_generation_follows_each_harness(lm: adapter.DllmqLM) -> None:
    dlm = lm.dlm
    eos, bos = dlm.eos_token_id, dlm.bos_token_id
    ids = [*dlm.encode("12\n34", add_special_tokens=False), eos, eos]
    assert adapter.finish_generation(dlm, ids, ["\n"], escape_until=False) == "12"
    assert adapter.finish_generation(dlm, ids, ["\n"], escape_until=True) == "12\n34"
    twelve, thirty_four = (dlm.encode(t, add_special_tokens=False) for t in ("12", "34"))
    after_eos = [*twelve, eos, bos, *thirty_four]
    expected = "12" if dlm.arch == "dream" else "1234"  # Dream cuts at EOS; LLaDA drops special tokens
    assert adapter.finish_generation(dlm, after_eos, [], escape_until=False) == expected


def test_gen_length_must_leave_room_for_the_prompt(lm: adapter.DllmqLM) -> None:
    tight = dataclasses.replace(lm.settings, max_length=4)
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        adapter.generate_text(lm.dlm, QUESTION, [], tight)


def test_stop_strings_normalizes_until() -> None:
    assert adapter.stop_strings(None) == []
    assert adapter.stop_strings("\n\n") == ["\n\n"]
    assert adapter.stop_strings(["Q:", "", "</s>"]) == ["Q:", "</s>"]
    with pytest.raises(TypeError, match="until must be"):
        adapter.stop_strings([3])


@given(
    text=st.text(alphabet="ab\n<", max_size=30),
    stops=st.lists(st.text(alphabet="ab\n<", max_size=3), max_size=4),
)
def test_truncate_at_stops_cuts_at_the_earliest_stop(text: str, stops: list[str]) -> None:
    out = adapter.truncate_at_stops(text, stops)
    real = [s for s in stops if s]
    assert text.startswith(out)
    assert not any(s in out for s in real)
    if out != text:
        assert any(text[len(out) :].startswith(s) for s in real)
    else:
        assert not any(s in text for s in real)
    assert adapter.truncate_at_stops(text, stops[::-1]) == out
    assert adapter.truncate_at_stops(out, stops) == out


# ----- packaging ---------------------------------------------------------------------------------------


def test_importing_dllm_bench_does_not_import_lm_eval() -> None:
    code = "import sys, dllm_bench; assert 'lm_eval' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_adapter_without_lm_eval_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "lm_eval" or n.startswith("dllm_bench.lm_eval_adapter")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ImportError, match=r"dllm-bench\[lm-eval\]"):
        importlib.import_module("dllm_bench.lm_eval_adapter")


def test_module_entry_point_is_lm_evals_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dllm_bench.lm_eval_adapter.__main__ import main

    monkeypatch.setattr(sys, "argv", ["lm-eval", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert "run" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without CUDA")
def test_a_cuda_device_falls_back_to_cpu_without_cuda(caplog: pytest.LogCaptureFixture) -> None:
    assert adapter.resolve_device(None) == "cpu"
    assert adapter.resolve_device("cuda:0") == "cpu"  # lm-eval's command line passes cuda:0 by default
    assert "no CUDA device is available; running on cpu" in caplog.text
    lm = get_model("dllmq").create_from_arg_string("pretrained=tiny-llada,mc_num=8", {"device": "cuda:0"})
    assert str(lm.device) == "cpu" and lm.dlm.dtype == torch.float32
