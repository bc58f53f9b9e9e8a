"""Synthetic two-operation arithmetic word problems: the GSM8K stand-in for the tiny reference models.

A problem is ``a op1 b op2 c`` with ``op`` in ``{+, -}``, evaluated left to right, rendered as a short
English word problem ("Ann has 347 apples. She buys 86 more and gives away 129. How many apples does she
have now?"). Every intermediate and final result is non-negative, so the answer is always a count.

Answer format (chosen so that a tiny masked-diffusion model can learn it on a CPU budget): the two
equations, chained, with every number written as exactly ``ANSWER_WIDTH`` (4) digits, zero padded and
**least significant digit first**, and each equation's carries (for ``+``) or borrows (for ``-``) written
out between the operands and the result. For 918 + 408 - 553 (918 + 408 = 1326, 1326 - 553 = 773) the
answer is ``"8190+8040:1010=6231-3550:0110=3770"``: ``:1010`` lists the carry out of each place, least
significant place first. Every result digit is then ``(x_i op y_i op c_i) mod 10`` and every carry
``[x_i op y_i op c_i`` overflows``]``, where ``x_i``, ``y_i`` and the incoming carry ``c_i`` sit at fixed
offsets inside the answer: each token is a function of three earlier answer tokens, which a 4-layer
model learns in minutes (without the carry row, the second result digit was still at chance after 5000
steps; docs/tiny_models.md). :func:`parse_answer` returns the final answer (the number after the last
``=``), and :func:`format_answer` produces the text.

Held-out problems are disjoint from training by construction: the key ``(ops, a, b, c)`` is hashed, and
keys whose hash falls in the held-out bucket (1 in ``HELDOUT_MODULUS``) are never produced by
:func:`train_split`, whatever its seed or operand widths.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "ANSWER_PARTS",
    "ANSWER_TOKENS",
    "ANSWER_WIDTH",
    "HELDOUT_MODULUS",
    "Problem",
    "answer_parts",
    "computed_offsets",
    "format_answer",
    "format_prompt",
    "heldout_problems",
    "is_heldout",
    "make_problem",
    "parse_answer",
    "train_split",
]

ANSWER_WIDTH = 4
"""Digits of each number of the answer (the largest possible answer is 999 + 999 + 999 = 2997)."""
ANSWER_TOKENS = 7 * ANSWER_WIDTH + 6
"""Tokens of an answer with the tiny models' tokenizer: five 4-digit numbers, two 4-digit carry rows, two
signs, two ``:`` and two ``=``."""
HELDOUT_MODULUS = 16
"""One problem key in ``HELDOUT_MODULUS`` belongs to the held-out split."""
_HELDOUT_SEED = 20240917

_PEOPLE = (("Ann", "she"), ("Ben", "he"), ("Mia", "she"), ("Tom", "he"), ("Eva", "she"), ("Sam", "he"))
_ITEMS = ("apples", "pens", "coins", "cards", "stamps", "books")
_PRESENT = {
    "+": ("buys {} more", "finds {} more", "gets {} more"),
    "-": ("gives away {}", "sells {}", "loses {}"),
}
_PAST = {"+": ("bought {} more", "found {} more", "got {} more"), "-": ("gave away {}", "sold {}", "lost {}")}
_BOX = {"+": ("puts in {}", "adds {}"), "-": ("takes out {}", "removes {}")}
_TEMPLATES = (
    "{Name} has {a} {item}. {Pron} {v1} and {v2}. How many {item} does {pron} have now?",
    "{Name} had {a} {item}, {v1}, then {v2}. How many {item} does {pron} have?",
    "A box holds {a} {item}. {Name} {v1} and then {v2}. How many {item} are in the box?",
)
_TEMPLATE_VERBS = (_PRESENT, _PAST, _BOX)
_OPS = (("+", "+"), ("+", "-"), ("-", "+"), ("-", "-"))


@dataclass(frozen=True)
class Problem:
    """One word problem ``a op1 b op2 c`` and its rendered text.

    Attributes:
        text: the English problem statement (no answer).
        a, b, c: the operands, in the order they appear in the text.
        ops: the two operations, each "+" or "-".
        template: index of the sentence template used for ``text``.
    """

    text: str
    a: int
    b: int
    c: int
    ops: tuple[str, str]
    template: int

    @property
    def intermediate(self) -> int:
        """``a op1 b`` (non-negative)."""
        return _apply(self.a, self.ops[0], self.b)

    @property
    def answer(self) -> int:
        """``(a op1 b) op2 c`` (non-negative)."""
        return _apply(self.intermediate, self.ops[1], self.c)

    @property
    def digits(self) -> int:
        """The number of digits of the longest operand."""
        return max(len(str(v)) for v in (self.a, self.b, self.c))

    @property
    def carries(self) -> int:
        """Carries (for +) and borrows (for -) over both operations, counted per digit place."""
        return _carries(self.a, self.ops[0], self.b) + _carries(self.intermediate, self.ops[1], self.c)

    @property
    def difficulty(self) -> str:
        """``"easy"`` (0-1 carries/borrows), ``"medium"`` (2-3) or ``"hard"`` (4 or more)."""
        n = self.carries
        return "easy" if n <= 1 else "medium" if n <= 3 else "hard"

    @property
    def key(self) -> tuple[str, int, int, int]:
        """The arithmetic content ``(ops, a, b, c)`` that decides the split (names and wording do not)."""
        return ("".join(self.ops), self.a, self.b, self.c)


def _apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y


def _carry_digits(x: int, op: str, y: int, places: int) -> list[int]:
    """The carry (``x + y``) or borrow (``x - y``, ``x >= y``) out of each of ``places`` digit places,
    least significant place first."""
    out, carry = [], 0
    for _ in range(places):
        dx, dy = x % 10, y % 10
        carry = int(dx + dy + carry >= 10) if op == "+" else int(dx - dy - carry < 0)
        out.append(carry)
        x, y = x // 10, y // 10
    return out


def _carries(x: int, op: str, y: int) -> int:
    """Count carries of ``x + y`` or borrows of ``x - y`` (``x >= y``), place by place."""
    return sum(_carry_digits(x, op, y, ANSWER_WIDTH))


def is_heldout(key: tuple[str, int, int, int]) -> bool:
    """True if the problem key ``(ops, a, b, c)`` belongs to the held-out split (a stable hash)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % HELDOUT_MODULUS == 0


def _operand(rng: random.Random, digits: tuple[int, int]) -> int:
    n = rng.randint(digits[0], digits[1])
    return rng.randint(10 ** (n - 1) if n > 1 else 0, 10**n - 1)


def make_problem(rng: random.Random, digits: tuple[int, int] = (2, 3)) -> Problem:
    """Draw one problem whose operands have between ``digits[0]`` and ``digits[1]`` digits.

    Operations and operands are redrawn until every intermediate result is non-negative.

    Raises:
        ValueError: if ``digits`` is not ``1 <= lo <= hi <= 3``.
    """
    lo, hi = digits
    if not 1 <= lo <= hi <= 3:
        raise ValueError(f"digits must satisfy 1 <= lo <= hi <= 3, got {digits}; answers have 4 digits")
    while True:
        ops = rng.choice(_OPS)
        a, b, c = (_operand(rng, digits) for _ in range(3))
        first = _apply(a, ops[0], b)
        if first >= 0 and _apply(first, ops[1], c) >= 0:
            break
    template = rng.randrange(len(_TEMPLATES))
    name, pron = rng.choice(_PEOPLE)
    verbs = _TEMPLATE_VERBS[template]
    text = _TEMPLATES[template].format(
        Name=name,
        Pron=pron.capitalize(),
        pron=pron,
        item=rng.choice(_ITEMS),
        a=a,
        v1=rng.choice(verbs[ops[0]]).format(b),
        v2=rng.choice(verbs[ops[1]]).format(c),
    )
    return Problem(text=text, a=a, b=b, c=c, ops=ops, template=template)


def train_split(seed: int, digits: tuple[int, int] = (2, 3)) -> Iterator[Problem]:
    """An endless, seeded stream of training problems; held-out keys (:func:`is_heldout`) never appear.

    Args:
        seed: the stream is a pure function of ``seed`` and ``digits``.
        digits: operand widths, inclusive (``(1, 2)`` for a curriculum's first stage).
    """
    rng = random.Random(seed)
    while True:
        problem = make_problem(rng, digits)
        if not is_heldout(problem.key):
            yield problem


def heldout_problems(n: int = 500) -> list[Problem]:
    """The first ``n`` held-out problems (2-3 digit operands), always the same list for the same ``n``."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = random.Random(_HELDOUT_SEED)
    out: list[Problem] = []
    seen: set[tuple[str, int, int, int]] = set()
    while len(out) < n:
        problem = make_problem(rng, (2, 3))
        if is_heldout(problem.key) and problem.key not in seen:
            seen.add(problem.key)
            out.append(problem)
    return out


def format_prompt(problem: Problem) -> str:
    """The prompt text the model sees: the problem, a newline and ``"A:"``; the answer follows it."""
    return f"{problem.text}\nA:"


def _reversed_digits(value: int) -> str:
    if not 0 <= value < 10**ANSWER_WIDTH:
        raise ValueError(f"{value} does not fit in {ANSWER_WIDTH} non-negative digits")
    return str(value).zfill(ANSWER_WIDTH)[::-1]


def format_answer(problem: Problem) -> str:
    """The answer text ``a op1 b : carries = r op2 c : carries = f``, every number as ``ANSWER_WIDTH``
    digits, zero padded, least significant digit first, no spaces (918 + 408 - 553 ->
    ``"8190+8040:1010=6231-3550:0110=3770"``)."""
    a, b, r, c, f = (
        _reversed_digits(v) for v in (problem.a, problem.b, problem.intermediate, problem.c, problem.answer)
    )
    (op1, op2), places = problem.ops, ANSWER_WIDTH
    carries1 = "".join(map(str, _carry_digits(problem.a, op1, problem.b, places)))
    carries2 = "".join(map(str, _carry_digits(problem.intermediate, op2, problem.c, places)))
    return f"{a}{op1}{b}:{carries1}={r}{op2}{c}:{carries2}={f}"


ANSWER_PARTS = ("a", "b", "carries1", "r", "c", "carries2", "f")
"""The digit groups of :func:`format_answer`, in answer order: the three operands ``a``, ``b`` and ``c``, the
intermediate result ``r``, the final answer ``f`` and the carry (or borrow) rows of the two equations."""
_COMPUTED_PARTS = ("carries1", "r", "carries2", "f")


def answer_parts() -> dict[str, list[int]]:
    """Offsets, inside every answer of :func:`format_answer`, of each digit group of ``ANSWER_PARTS``:
    ``ANSWER_WIDTH`` offsets per group, least significant place first. The layout is the same for every
    problem, and each character is one token."""
    layout = format_answer(Problem(text="", a=0, b=0, c=0, ops=("+", "+"), template=0))
    groups = [m.start() for m in re.finditer(r"[0-9]+", layout)]
    return {
        name: list(range(start, start + ANSWER_WIDTH))
        for name, start in zip(ANSWER_PARTS, groups, strict=True)
    }


def computed_offsets() -> list[int]:
    """Offsets of the answer tokens that are computed rather than copied from the prompt: the two carry
    rows and the two results, in answer order (16 tokens). The rest are the restated operands, the signs
    and the separators."""
    parts = answer_parts()
    return sorted(offset for name in _COMPUTED_PARTS for offset in parts[name])


def parse_answer(text: str) -> int | None:
    """Invert :func:`format_answer`: the final answer, the digits after the last ``=`` (least significant
    digit first).

    Reading stops at the first character that is not a digit after that ``=`` (e.g. an EOS token). Returns
    None when ``text`` has no ``=`` followed by a digit.
    """
    match = _FINAL_RE.search(text)
    return None if match is None else int(match.group(1)[::-1])


_FINAL_RE = re.compile(r"=([0-9]+)[^=]*$")
