"""A mixed-integer program kept as arrays, solved with HiGHS (``highspy``).

Columns are appended one at a time or in runs; rows are kept in coordinate
form (row, column, coefficient) in typed arrays and handed to HiGHS in one
``addRows`` call, so building a program of a few hundred thousand non-zeros
costs no per-row Python objects beyond the caller's own lists.

A program may carry several objectives (``objective(name)``). A
:class:`Session` loads it into HiGHS once and minimises any combination of
them in turn, holding an objective at the value found (:meth:`Session.hold`)
before the next; HiGHS reports a dual bound for each run, a lower bound of
that run's objective over every solution of the program at that point.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

INF = math.inf


class Infeasible(Exception):
    """A row with no variables that cannot hold."""


class Program:
    """Columns, rows and objectives of one mixed-integer program."""

    def __init__(self) -> None:
        self.lb = array("d")
        self.ub = array("d")
        self.is_int = array("b")
        self.names: list[Any] = []
        self._objectives: dict[str, array] = {"cost": array("d")}
        self._row_of = array("i")  # coordinate form: row index, column, value
        self._col_of = array("i")
        self._val = array("d")
        self.row_lo = array("d")
        self.row_hi = array("d")

    # ------------------------------------------------------------ building

    @property
    def cost(self) -> array:
        return self._objectives["cost"]

    def objective(self, name: str) -> array:
        """The coefficients of objective ``name`` (created empty: zero on every column)."""
        if name not in self._objectives:
            self._objectives[name] = array("d", bytes(8 * len(self.lb)))
        return self._objectives[name]

    def var(self, name: Any, cost: float = 0.0, lb: float = 0.0, ub: float = INF, integer: bool = True, **objectives: float) -> int:
        """Add one column; ``cost`` is its coefficient in the objective ``cost``, keywords in the others."""
        n = len(self.lb)
        self.lb.append(lb)
        self.ub.append(ub)
        self.is_int.append(1 if integer else 0)
        self.names.append(name)
        self._objectives["cost"].append(cost)
        for key, obj in self._objectives.items():
            if key != "cost":
                obj.append(objectives.get(key, 0.0))
        for key, v in objectives.items():
            if key not in self._objectives:
                self.objective(key)[n] = v
        return n

    def row(self, terms: Mapping[int, float] | Iterable[tuple[int, float]], lo: float = -INF, hi: float = INF) -> None:
        """Add ``lo <= sum(coefficient * column) <= hi``."""
        items = terms.items() if isinstance(terms, Mapping) else terms
        r = len(self.row_lo)
        n = 0
        for col, coef in items:
            self._row_of.append(r)
            self._col_of.append(col)
            self._val.append(coef)
            n += 1
        if n:
            self.row_lo.append(lo)
            self.row_hi.append(hi)
        elif lo > 1e-9 or hi < -1e-9:
            raise Infeasible("a constraint with no variables cannot hold")

    def row_of(self, cols: Sequence[int], coefs: Sequence[float], lo: float = -INF, hi: float = INF) -> None:
        """:meth:`row` from parallel sequences."""
        self.row(zip(cols, coefs), lo, hi)

    @property
    def size(self) -> tuple[int, int, int]:
        return len(self.lb), int(sum(self.is_int)), len(self.row_lo)

    @property
    def nonzeros(self) -> int:
        return len(self._val)

    # ------------------------------------------------------------- solving

    def load_highs(self, threads: int | None):  # noqa: ANN202
        import highspy

        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        if threads:
            h.setOptionValue("threads", int(threads))
        n = len(self.lb)
        inf = highspy.kHighsInf
        lb = np.frombuffer(self.lb, dtype=np.float64).copy()
        ub = np.frombuffer(self.ub, dtype=np.float64).copy()
        ub[np.isinf(ub)] = inf
        lb[np.isinf(lb)] = -inf
        h.addCols(n, np.zeros(n), lb, ub, 0, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float64))
        m = len(self.row_lo)
        if m:
            rows = np.frombuffer(self._row_of, dtype=np.int32)
            cols = np.frombuffer(self._col_of, dtype=np.int32)
            vals = np.frombuffer(self._val, dtype=np.float64)
            rows, cols, vals = _merge_duplicates(rows, cols, vals, n)
            lo = np.frombuffer(self.row_lo, dtype=np.float64).copy()
            hi = np.frombuffer(self.row_hi, dtype=np.float64).copy()
            rows, cols, vals, lo, hi = _drop_redundant(rows, cols, vals, lo, hi, np.frombuffer(self.lb, dtype=np.float64), np.frombuffer(self.ub, dtype=np.float64))
            m = len(lo)
            starts = np.searchsorted(rows, np.arange(m)).astype(np.int32)
            lo[np.isinf(lo)] = -inf
            hi[np.isinf(hi)] = inf
            h.addRows(m, lo, hi, len(vals), starts, cols.astype(np.int32), vals)
        ints = np.flatnonzero(np.frombuffer(self.is_int, dtype=np.int8)).astype(np.int32)
        if len(ints):
            h.changeColsIntegrality(len(ints), ints, np.ones(len(ints), np.uint8))
        return h

    def session(self, threads: int | None = None) -> Session:
        """One HiGHS instance over this program, to minimise objectives one after another."""
        return Session(self, threads)

    def solve(self, time_limit: float = 60.0, gap: float = 1e-4, threads: int | None = None, abs_gap: float = 1e-6, objective: str = "cost") -> tuple[np.ndarray | None, dict[str, Any]]:
        """Minimise one objective. Returns the solution (or None) and what HiGHS reports."""
        x, info = self.session(threads).minimise(self.coefficients(objective), time_limit, gap, abs_gap)
        return x, {**info, **self.size_info()}

    def coefficients(self, objective: str) -> np.ndarray:
        return np.frombuffer(self.objective(objective), dtype=np.float64).copy()

    def size_info(self) -> dict[str, int]:
        nv, ni, nr = self.size
        return {"variables": nv, "integer_variables": ni, "constraints": nr}



class Session:
    """A program loaded into HiGHS once; each :meth:`minimise` solves it for one
    objective (HiGHS presolves again, starting from the solution given), and
    :meth:`hold` keeps an objective at most at a value for the next ones."""

    def __init__(self, program: Program, threads: int | None = None) -> None:
        self.program = program
        self.h = program.load_highs(threads)
        self.name = f"HiGHS {self.h.version()} (highspy)"

    def minimise(self, c: np.ndarray, time_limit: float, gap: float, abs_gap: float = 1e-6, start: np.ndarray | None = None) -> tuple[np.ndarray | None, dict[str, Any]]:
        h = self.h
        n = len(c)
        h.changeColsCost(n, np.arange(n, dtype=np.int32), np.ascontiguousarray(c, dtype=np.float64))
        h.setOptionValue("time_limit", max(0.01, float(time_limit)))
        h.setOptionValue("mip_rel_gap", float(gap))
        h.setOptionValue("mip_abs_gap", float(abs_gap))
        if start is not None:
            h.setSolution(_solution(start))
        began, cpu = time.perf_counter(), time.process_time()
        h.run()
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        status = h.modelStatusToString(h.getModelStatus()).lower()
        info = h.getInfo()
        has = info.primal_solution_status == 2  # kSolutionStatusFeasible
        obj = info.objective_function_value if has else None
        integer = bool(sum(self.program.is_int))
        bound = info.mip_dual_bound if integer else obj
        if has and not integer:
            gap_v = 0.0
        elif has:
            gap_v = info.mip_gap
            if gap_v is None or not math.isfinite(gap_v):
                gap_v = 0.0
        else:
            gap_v = None
        x = np.array(h.getSolution().col_value) if has else None
        return x, {"name": self.name, "status": status, "gap": float(gap_v) if gap_v is not None else None, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                   "objective": obj, "bound": bound, "nodes": int(info.mip_node_count) if integer else 0}

    def hold(self, c: np.ndarray, value: float, slack: float = 1e-7) -> None:
        """Add ``c · x ≤ value`` (plus ``slack`` relative, for rounding)."""
        nz = np.flatnonzero(c)
        if len(nz):
            self.h.addRow(-np.inf, value + slack * max(1.0, abs(value)), len(nz), nz.astype(np.int32), np.ascontiguousarray(c[nz], dtype=np.float64))


def _merge_duplicates(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum repeated (row, column) entries; keep the order otherwise."""
    key = rows.astype(np.int64) * n + cols
    if len(np.unique(key)) == len(key):
        return rows, cols, vals
    order = np.argsort(key, kind="stable")
    key_s = key[order]
    first = np.ones(len(key_s), dtype=bool)
    first[1:] = key_s[1:] != key_s[:-1]
    group = np.cumsum(first) - 1
    summed = np.zeros(int(group[-1]) + 1)
    np.add.at(summed, group, vals[order])
    uniq = key_s[first]
    return (uniq // n).astype(np.int32), (uniq % n).astype(np.int32), summed


def _drop_redundant(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray, lb: np.ndarray, ub: np.ndarray):  # noqa: ANN202
    """Leave out the rows every point within the column bounds meets (their least and
    greatest activity lie within the row's bounds); renumber the rest in order."""
    with np.errstate(invalid="ignore"):
        a_lo = np.where(vals > 0, vals * lb[cols], vals * ub[cols])
        a_hi = np.where(vals > 0, vals * ub[cols], vals * lb[cols])
    m = len(lo)
    least = np.zeros(m)
    most = np.zeros(m)
    np.add.at(least, rows, np.nan_to_num(a_lo, nan=0.0, neginf=-np.inf, posinf=np.inf))
    np.add.at(most, rows, np.nan_to_num(a_hi, nan=0.0, neginf=-np.inf, posinf=np.inf))
    keep = ~((least >= lo - 1e-9) & (most <= hi + 1e-9))
    if keep.all():
        return rows, cols, vals, lo, hi
    new_index = np.cumsum(keep) - 1
    mask = keep[rows]
    return new_index[rows[mask]].astype(np.int32), cols[mask], vals[mask], lo[keep], hi[keep]


def _solution(x: np.ndarray):  # noqa: ANN202
    import highspy

    sol = highspy.HighsSolution()
    sol.col_value = list(map(float, x))
    sol.value_valid = True
    return sol
