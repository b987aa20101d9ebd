"""Verdicts: how the grader decides a graded part, outside the student's interpreter.

Every graded cell (``grade_id``) of every notebook declares one verdict
(:mod:`ood_utils.grader.course_parts`). After the cell has run in the student's kernel, the
grader asks the kernel for plain data only (:class:`ood_utils.grader.exchange.Exchange`) and
judges it here, against references computed in the grading process:

* :class:`SelfCheck`: the public self-check of :mod:`ood_utils.answer_key.checks` runs *here*,
  with every call of the student's function sent to the kernel; its random inputs are drawn
  from seeds the grader picks per run (not the public ones), the reference runs here;
* :class:`Scores`: the student's score vectors on the real features (captured from the
  kernel) against the reference's, element by element; the AUROC is the grader's own;
* :class:`Values`: values captured from the kernel (a sweep table, a summary) judged by a
  graded check run here (it compares with the answer key or a reference computed here);
* :class:`SweepCall`: the student's sweep function called by the grader on inputs it draws
  (a random subset of the real features, new every run), its table against the reference
  sweep on the same inputs, computed here (so a table typed in from the answer key fails);
* :class:`Computed`: a judge of its own that calls the student's functions on inputs it
  draws (07's threshold sweep on distances of the grader's);
* :class:`Probed`: a check whose inputs are objects (a network class, a training loop): its
  probe runs in the kernel and hands back plain values, its judge decides here (the public
  self-check runs the same probe and judge on the student's objects, on the public seeds);
* :class:`AllOf`: every one of several verdicts;

A verdict returns an :class:`Outcome`; any failure is a structured :class:`Failure`.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["Outcome", "Failure", "Verdict", "SelfCheck", "Scores", "Values", "SweepCall", "Computed",
           "Probed", "AllOf", "Context"]


@dataclass(frozen=True)
class Failure:
    """Why a part earned nothing. ``kind``: ``mismatch`` (wrong values), ``not_implemented``,
    ``student_error`` (the function raised), ``no_answer`` (nothing readable came back),
    ``kernel`` (the kernel died or timed out), ``grader`` (a bug of the grader)."""

    kind: str
    message: str


@dataclass(frozen=True)
class Outcome:
    passed: bool
    failure: Failure | None = None
    note: str = ""

    @staticmethod
    def ok(note: str = "") -> "Outcome":
        return Outcome(True, None, note)

    @staticmethod
    def fail(kind: str, message: str) -> "Outcome":
        return Outcome(False, Failure(kind, " ".join(str(message).split())[:1000]))


@dataclass
class Context:
    """What a verdict may use: the exchange with the kernel, the profile, a seed shift."""

    exchange: Any
    profile: str
    seed_shift: int
    references: dict = field(default_factory=dict)  # cache of reference values per run


class Verdict:
    def judge(self, ctx: Context) -> Outcome:  # pragma: no cover - interface
        raise NotImplementedError


class _Remote:
    """Stands for the student's function in a check: every call goes to the kernel."""

    def __init__(self, exchange, name: str):
        self._exchange, self.__name__ = exchange, name
        self.__qualname__ = name

    def __call__(self, *args, **kwargs):
        return self._exchange.call(self.__name__, *args, **kwargs)


@contextlib.contextmanager
def _shifted_seeds(shift: int):
    """The checks' random inputs come from ``_gen``/``_random_feats``: shift their seeds."""
    from ..answer_key.checks import _common

    old = _common.SEED_SHIFT
    _common.SEED_SHIFT = shift
    try:
        yield
    finally:
        _common.SEED_SHIFT = old


def _run_check(fn: Callable, *args) -> Outcome:
    from .exchange import KernelFailure, StudentError

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            fn(*args)
    except KernelFailure as err:
        return Outcome.fail("no_answer" if type(err).__name__ == "NoAnswer" else "kernel",
                            str(err))
    except NotImplementedError as err:
        return Outcome.fail("not_implemented", f"NotImplementedError: {err}")
    except AssertionError as err:
        return Outcome.fail("mismatch", str(err))
    except StudentError as err:
        return Outcome.fail("student_error", str(err))
    except (ValueError, TypeError, RuntimeError, IndexError, KeyError, ZeroDivisionError,
            AttributeError, NameError, ArithmeticError) as err:
        return Outcome.fail("student_error", f"{type(err).__name__}: {err}")
    except Exception as err:  # noqa: BLE001 - whatever went wrong, no points
        return Outcome.fail("grader", f"{type(err).__name__}: {err}")
    return Outcome.ok()


@dataclass(frozen=True)
class SelfCheck(Verdict):
    """``checks.<check>(<the student's functions>)`` run by the grader, on its own seeds."""

    check: str
    functions: tuple[str, ...]

    def judge(self, ctx: Context) -> Outcome:
        from ..answer_key import checks

        fn = getattr(checks, self.check)
        remotes = [_Remote(ctx.exchange, name) for name in self.functions]
        with _shifted_seeds(ctx.seed_shift):
            return _run_check(fn, *remotes)


@dataclass(frozen=True)
class Scores(Verdict):
    """Captured score vectors against the reference's, element by element.

    ``exprs`` are two expressions evaluated in the kernel after the part's cell (ID and OOD
    test scores); ``reference(profile)`` returns the reference's pair, computed here (cached per
    run); ``rtol``/``atol`` is the tolerance every correct variant meets. The AUROC of the
    student's scores, computed here, must then be within the answer key's tolerance.
    """

    result_id: str
    exprs: tuple[str, str]
    reference: Callable
    rtol: float = 1e-4
    atol: float = 1e-5

    def judge(self, ctx: Context) -> Outcome:
        from ..answer_key.checks import check_auroc
        from ..methods import metrics
        from .exchange import KernelFailure, StudentError

        try:
            got = ctx.exchange.capture({"in": self.exprs[0], "out": self.exprs[1]})
        except (KernelFailure, StudentError) as err:
            return Outcome.fail("no_answer", f"no scores to grade ({err})")
        key = ("scores", self.result_id)
        if key not in ctx.references:
            ctx.references[key] = self.reference(ctx.profile)
        want = ctx.references[key]
        pairs = []
        for side, w in zip(("in", "out"), want):
            g = got.get(side)
            w = np.asarray(w, dtype=np.float64).ravel()
            if not hasattr(g, "shape"):
                return Outcome.fail("no_answer", f"{self.exprs[0 if side == 'in' else 1]} is "
                                                 "not an array of scores")
            g = np.asarray(g, dtype=np.float64).ravel()
            if g.shape != w.shape:
                return Outcome.fail("mismatch", f"{self.result_id}: {len(g)} {side.upper()} "
                                                f"scores, expected {len(w)}")
            if not np.all(np.isfinite(g)):
                return Outcome.fail("mismatch", f"{self.result_id}: the scores contain NaN "
                                                "or inf")
            bad = ~np.isclose(g, w, rtol=self.rtol, atol=self.atol)
            if bad.any():
                i = int(np.argmax(bad))
                return Outcome.fail(
                    "mismatch", f"{self.result_id}: {int(bad.sum())} of {len(w)} "
                                f"{'ID' if side == 'in' else 'OOD'} test scores differ from "
                                f"the reference's (row {i}: {g[i]:.6g}, reference {w[i]:.6g})")
            pairs.append(g)
        value = metrics.auroc(pairs[0], pairs[1])
        outcome = _run_check(check_auroc, self.result_id, value, ctx.profile)
        return outcome if not outcome.passed else Outcome.ok(f"AUROC {value:.2f}")


@dataclass(frozen=True)
class Values(Verdict):
    """Values captured from the kernel, judged here: ``judge_fn(**captured)``.

    ``exprs`` maps argument names to kernel expressions; ``judge_fn`` is a graded check (or a
    function around one) that raises ``AssertionError`` on a wrong value.
    """

    exprs: tuple[tuple[str, str], ...]
    judge_fn: Callable

    def judge(self, ctx: Context) -> Outcome:
        from .exchange import KernelFailure, StudentError

        try:
            got = ctx.exchange.capture(dict(self.exprs))
        except (KernelFailure, StudentError) as err:
            return Outcome.fail("no_answer", f"nothing to grade ({err})")
        return _run_check(lambda: self.judge_fn(ctx.profile, **got))


@dataclass(frozen=True)
class SweepCall(Verdict):
    """``function(*inputs)`` called in the kernel on inputs the grader draws, judged here.

    ``inputs(profile, rng)`` returns the arguments (tensors, a ``torch.nn.Linear``, the grid of
    settings last); ``rng`` is seeded with the run's secret seed shift, so the inputs differ
    from run to run and are not in the student's reach. ``reference(*arguments)`` returns the
    reference sweep ``{setting: AUROC in percent}`` on the same inputs, computed in the grading
    process. Every setting must be in the student's dict within ``tol`` points.
    """

    function: str
    inputs: Callable
    reference: Callable
    tol: float = 0.1

    def judge(self, ctx: Context) -> Outcome:
        args = self.inputs(ctx.profile, np.random.default_rng(ctx.seed_shift))
        want = self.reference(*args)

        def compare():
            got = ctx.exchange.call(self.function, *args)
            if not isinstance(got, dict):
                raise AssertionError(f"{self.function} returned {type(got).__name__}, not a "
                                     "dict {setting: AUROC}")
            wrong = []
            for setting, w in want.items():
                g = got.get(setting)
                if g is None:
                    raise AssertionError(f"{self.function}: no value for the setting "
                                         f"{setting!r} (returned keys: {list(got)[:10]})")
                try:
                    g = float(g)
                except (TypeError, ValueError):
                    raise AssertionError(f"{self.function}: the value for {setting!r} is not a "
                                         "number") from None
                if not (np.isfinite(g) and abs(g - float(w)) <= self.tol):
                    wrong.append(f"{setting!r}: {g:.2f} (reference {float(w):.2f})")
            if wrong:
                raise AssertionError(
                    f"{self.function} on the grader's own inputs (a random subset of the "
                    f"features): {len(wrong)} of {len(want)} settings differ by more than "
                    f"{self.tol:g} points from the reference: " + "; ".join(wrong[:5]))

        return _run_check(compare)


@dataclass(frozen=True)
class Computed(Verdict):
    """``judge_fn(exchange, profile, rng)`` decides: it calls the student's functions through
    the exchange on inputs it draws with ``rng`` (seeded with the run's secret seed shift) and
    raises ``AssertionError`` on a wrong answer."""

    judge_fn: Callable

    def judge(self, ctx: Context) -> Outcome:
        rng = np.random.default_rng(ctx.seed_shift)
        return _run_check(lambda: self.judge_fn(ctx.exchange, ctx.profile, rng))


@dataclass(frozen=True)
class Probed(Verdict):
    """``checks.<check>``'s judge run here, its probe run in the kernel on the grader's seeds.

    ``check`` is the public self-check (stripped from the sandbox's copy), ``judge`` the name
    of its verdict function in the same module, ``judge(run, function)``, where
    ``run(probe, *args)`` sends the probe's source and the grader's inputs to the kernel
    (:meth:`ood_utils.grader.exchange.Exchange.run`) and returns its plain values.
    """

    check: str
    judge_name: str
    function: str

    def judge(self, ctx: Context) -> Outcome:
        import importlib

        from ..answer_key import checks

        module = importlib.import_module(getattr(checks, self.check).__module__)
        judge_fn = getattr(module, self.judge_name)
        with _shifted_seeds(ctx.seed_shift):
            return _run_check(judge_fn, ctx.exchange.run, self.function)


@dataclass(frozen=True)
class AllOf(Verdict):
    parts: tuple[Verdict, ...]

    def judge(self, ctx: Context) -> Outcome:
        for part in self.parts:
            outcome = part.judge(ctx)
            if not outcome.passed:
                return outcome
        return Outcome.ok()
