"""The arithmetic word-problem generator: determinism, split disjointness, answers, format, difficulty."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from dllm_sampler.tasks import answer_part_accuracy, exact_accuracy, score_answers
from dllm_sampler.tasks.arithmetic import (
    ANSWER_PARTS,
    ANSWER_TOKENS,
    ANSWER_WIDTH,
    Problem,
    answer_parts,
    computed_offsets,
    format_answer,
    format_prompt,
    heldout_problems,
    is_heldout,
    make_problem,
    parse_answer,
    train_split,
)
from hypothesis import given
from hypothesis import strategies as st


def _take(stream, n):
    return list(itertools.islice(stream, n))


def _column_carries(x: int, op: str, y: int) -> int:
    """Independent count: pad both to 5 digits and do schoolbook column arithmetic on strings."""
    xs, ys = str(x).zfill(5)[::-1], str(y).zfill(5)[::-1]
    count, carry = 0, 0
    for dx, dy in zip(map(int, xs), map(int, ys), strict=True):
        total = dx + dy + carry if op == "+" else dx - dy - carry
        carry = int(total >= 10) if op == "+" else int(total < 0)
        count += carry
    return count


def test_train_split_is_deterministic_per_seed():
    assert _take(train_split(3), 200) == _take(train_split(3), 200)
    assert _take(train_split(3), 50) != _take(train_split(4), 50)


def test_heldout_is_fixed_unique_and_prefix_stable():
    a, b = heldout_problems(500), heldout_problems(500)
    assert a == b
    assert len({p.key for p in a}) == 500
    assert heldout_problems(100) == a[:100]
    assert all(is_heldout(p.key) for p in a)


def test_train_and_heldout_are_disjoint():
    heldout = {p.key for p in heldout_problems(500)}
    for seed, digits in ((0, (2, 3)), (1, (1, 3)), (7, (1, 2))):
        train = _take(train_split(seed, digits), 5000)
        assert not any(is_heldout(p.key) for p in train)
        assert heldout.isdisjoint(p.key for p in train)


def test_heldout_fraction_matches_the_hash_bucket():
    rng = random.Random(11)
    keys = [make_problem(rng).key for _ in range(4000)]
    frac = sum(map(is_heldout, keys)) / len(keys)
    assert 0.03 < frac < 0.10  # 1/16 = 0.0625 expected


def test_answers_are_correct_and_non_negative():
    for p in _take(train_split(5), 500) + heldout_problems(200):
        expr = f"{p.a} {p.ops[0]} {p.b}"
        assert p.intermediate == eval(expr) >= 0
        assert p.answer == eval(f"({expr}) {p.ops[1]} {p.c}") >= 0
        # the operands appear in the text, in order
        assert [int(n) for n in re.findall(r"\d+", p.text)] == [p.a, p.b, p.c]


def test_operand_widths_follow_digits():
    for p in heldout_problems(300):
        assert all(10 <= v <= 999 for v in (p.a, p.b, p.c))
    small = _take(train_split(0, (1, 1)), 200)
    assert all(v <= 9 for p in small for v in (p.a, p.b, p.c))
    with pytest.raises(ValueError, match="digits"):
        make_problem(random.Random(0), (2, 4))


def test_every_template_and_op_pair_occurs():
    problems = heldout_problems(500)
    assert {p.template for p in problems} == {0, 1, 2}
    assert {p.ops for p in problems} == {("+", "+"), ("+", "-"), ("-", "+"), ("-", "-")}


def test_answers_span_several_digits():
    widths = {len(str(p.answer)) for p in heldout_problems(500)}
    assert {2, 3, 4} <= widths


@given(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999), st.sampled_from(["+", "-"]))
def test_parse_answer_inverts_format_answer(a, b, c, op2):
    p = Problem(text="", a=max(a, b), b=min(a, b), c=c, ops=("-", op2), template=0)
    if p.answer < 0:
        p = Problem(text="", a=p.a, b=p.b, c=c, ops=("+", "+"), template=0)
    text = format_answer(p)
    assert len(text) == ANSWER_TOKENS
    assert parse_answer(text) == p.answer
    assert parse_answer(text + "<|eos|><|eos|>") == p.answer
    fields = re.split(r"[-+:=]", text)
    x, y, carries, r, c, carries2, f = fields
    assert [int(n[::-1]) for n in (x, y, r, c, f)] == [p.a, p.b, p.intermediate, p.c, p.answer]
    for top, op, bottom, row, result in ((x, p.ops[0], y, carries, r), (r, p.ops[1], c, carries2, f)):
        carry_in = 0
        for i in range(len(top)):  # place i: top_i op bottom_i op carry_in == result_i +/- 10 carry_out
            sign = 1 if op == "+" else -1
            total = int(top[i]) + sign * (int(bottom[i]) + carry_in)
            assert total == int(result[i]) + sign * 10 * int(row[i])
            carry_in = int(row[i])


def test_format_answer_is_least_significant_first():
    p = Problem(text="", a=918, b=408, c=553, ops=("+", "-"), template=0)
    assert format_answer(p) == "8190+8040:1010=6231-3550:0110=3770"
    assert parse_answer("8190+8040:1010=6231-3550:0110=3770") == 773
    bad = Problem(text="", a=9999, b=1, c=0, ops=("+", "+"), template=0)
    with pytest.raises(ValueError, match="digits"):
        format_answer(bad)


def test_parse_answer_rejects_other_shapes():
    assert parse_answer("") is None
    assert parse_answer("3770") is None  # no equation
    assert parse_answer("8190+8040=6231-3550=<|eos|>") is None
    assert parse_answer("abc=") is None
    assert parse_answer("=²³") is None


@pytest.mark.parametrize(
    ("a", "ops", "b", "c", "carries", "label"),
    [
        (111, ("+", "+"), 222, 333, 0, "easy"),
        (15, ("+", "-"), 5, 1, 2, "medium"),  # 15+5: one carry; 20-1: one borrow
        (999, ("+", "-"), 1, 500, 4, "hard"),  # 999+1: three carries; 1000-500: one borrow
        (100, ("-", "+"), 1, 1, 4, "hard"),  # 100-1: two borrows; 99+1: two carries
        (999, ("+", "+"), 999, 999, 6, "hard"),
    ],
)
def test_difficulty_labels(a, ops, b, c, carries, label):
    p = Problem(text="", a=a, b=b, c=c, ops=ops, template=0)
    expected = _column_carries(a, ops[0], b) + _column_carries(p.intermediate, ops[1], c)
    assert p.carries == expected
    assert p.carries == carries
    assert p.difficulty == label


def test_carries_agree_with_column_arithmetic():
    for p in heldout_problems(300):
        assert p.carries == _column_carries(p.a, p.ops[0], p.b) + _column_carries(
            p.intermediate, p.ops[1], p.c
        )
    labels = {p.difficulty for p in heldout_problems(500)}
    assert labels == {"easy", "medium", "hard"}


def test_format_prompt_ends_with_answer_cue():
    p = heldout_problems(1)[0]
    assert format_prompt(p).startswith(p.text)
    assert format_prompt(p).endswith("\nA:")


def _problem(a: int, b: int, c: int, op2: str) -> Problem:
    if op2 == "-" and c > a + b:
        c = a + b
    return Problem(text="", a=a, b=b, c=c, ops=("+", op2), template=0)


@given(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999), st.sampled_from(["+", "-"]))
def test_computed_offsets_pick_the_carry_rows_and_results(a, b, c, op2):
    answer = format_answer(_problem(a, b, c, op2))
    offsets = computed_offsets()
    groups = re.findall(r"[:=]([0-9]+)", answer)
    assert [answer[i] for i in offsets] == list("".join(groups))
    assert len(offsets) == 16 and len(groups) == 4
    assert all(answer[i - 1] in ":=" for i in offsets[::4])


@given(st.lists(st.booleans(), min_size=1, max_size=12))
def test_exact_accuracy_counts_the_right_final_answers(right):
    problems = heldout_problems(len(right))
    # a wrong text keeps the scratchpad but ends in another final answer
    texts = [format_answer(p) + ("<|eos|>" if ok else "1") for p, ok in zip(problems, right, strict=True)]
    assert exact_accuracy(texts, problems) == sum(right) / len(right)


@given(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999), st.sampled_from(["+", "-"]))
def test_answer_parts_read_back_every_number(a, b, c, op2):
    p = _problem(a, b, c, op2)
    answer, parts = format_answer(p), answer_parts()
    assert tuple(parts) == ANSWER_PARTS
    assert all(len(offsets) == ANSWER_WIDTH for offsets in parts.values())
    read = {name: "".join(answer[i] for i in offsets) for name, offsets in parts.items()}
    numbers = {"a": p.a, "b": p.b, "r": p.intermediate, "c": p.c, "f": p.answer}
    assert {name: int(read[name][::-1]) for name in numbers} == numbers
    assert sorted(i for offsets in parts.values() for i in offsets) == [
        i for i, ch in enumerate(answer) if ch.isdigit()
    ]


@given(st.lists(st.tuples(st.sampled_from(ANSWER_PARTS), st.integers(0, ANSWER_WIDTH - 1)), max_size=8))
def test_answer_part_accuracy_finds_each_wrong_digit(errors):
    problems = heldout_problems(len(errors) + 2)
    texts = [format_answer(p) for p in problems]
    parts = answer_parts()
    for k, (name, place) in enumerate(errors):  # problem k gets one wrong digit
        i = parts[name][place]
        texts[k] = texts[k][:i] + str((int(texts[k][i]) + 1) % 10) + texts[k][i + 1 :]
    texts[-1] = texts[-1][: parts["f"][0]]  # truncated: the final answer's places count as wrong
    accuracy = answer_part_accuracy(texts, problems)
    for name in ANSWER_PARTS:
        for place in range(ANSWER_WIDTH):
            wrong = sum(e == (name, place) for e in errors) + (name == "f")
            assert accuracy[name][place] == pytest.approx(1 - wrong / len(problems))
    report = score_answers(texts, problems)
    assert report.total == len(problems)
    assert report.correct == len(problems) - 1 - sum(name == "f" for name, _ in errors)
