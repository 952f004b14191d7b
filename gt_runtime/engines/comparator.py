"""Run several runners on the same inputs and compare their outputs pairwise.

Used by the tests and by `gt export`'s parity table: for each output, max / mean / p99
absolute error against the first runner (the reference), and pass/fail at atol + rtol.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def to_numpy(a) -> np.ndarray:
    """numpy or CuPy array -> numpy float64 (for error statistics)."""
    if hasattr(a, "get"):
        a = a.get()
    return np.asarray(a, dtype=np.float64)


@dataclass
class OutputError:
    name: str
    max_abs: float
    mean_abs: float
    p99_abs: float
    ref_max_abs: float
    passed: bool

    def __str__(self):
        return (f"{self.name}: max {self.max_abs:.3g} mean {self.mean_abs:.3g} p99 {self.p99_abs:.3g} "
                f"(|ref| max {self.ref_max_abs:.3g}) {'ok' if self.passed else 'FAIL'}")


@dataclass
class Comparison:
    reference: str
    other: str
    outputs: dict = field(default_factory=dict)   # name -> OutputError

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs.values())

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs.values()), default=0.0)

    def as_dict(self) -> dict:
        return {"reference": self.reference, "other": self.other, "passed": self.passed,
                "outputs": {k: {"max_abs": v.max_abs, "mean_abs": v.mean_abs, "p99_abs": v.p99_abs} for k, v in self.outputs.items()}}

    def __str__(self):
        lines = [f"{self.other} vs {self.reference}: {'ok' if self.passed else 'FAIL'}"]
        lines += [f"  {o}" for o in self.outputs.values()]
        return "\n".join(lines)


def compare_outputs(ref: dict, other: dict, atol: float = 1e-4, rtol: float = 0.0,
                    ref_name: str = "reference", other_name: str = "other") -> Comparison:
    """Two output dicts (numpy or CuPy) -> Comparison over the names they share."""
    cmp = Comparison(ref_name, other_name)
    for name in ref:
        if name not in other:
            continue
        a, b = to_numpy(ref[name]), to_numpy(other[name])
        if a.shape != b.shape:
            raise ValueError(f"output {name!r} | {other_name} shape {b.shape} | expected {a.shape} as {ref_name}")
        err = np.abs(a - b).reshape(-1)
        passed = bool(np.all(err <= atol + rtol * np.abs(a).reshape(-1)))
        cmp.outputs[name] = OutputError(name, float(err.max(initial=0.0)), float(err.mean()) if err.size else 0.0,
                                        float(np.percentile(err, 99)) if err.size else 0.0,
                                        float(np.abs(a).max(initial=0.0)), passed)
    return cmp


def compare_runners(runners: list, feeds: list[dict] | dict, atol: float = 1e-4, rtol: float = 0.0) -> list[Comparison]:
    """Run every runner (activated as needed) on each feed; compare runners[1:] to runners[0].

    feeds: one feed dict or a list; the errors of all feeds are pooled per output.
    -> one Comparison per non-reference runner.
    """
    if isinstance(feeds, dict):
        feeds = [feeds]
    results = []
    for r in runners:
        r.activate()
        outs = [r.infer(f) for f in feeds]
        results.append({k: np.concatenate([to_numpy(o[k]).reshape(-1) for o in outs]) for k in outs[0]})
    ref = runners[0]
    return [compare_outputs(results[0], res, atol, rtol, ref.name, r.name) for r, res in zip(runners[1:], results[1:])]


def psnr(a, b, peak: float = 1.0) -> float:
    """PSNR in dB between two images (float in [0, peak] or uint8 with peak=255)."""
    a, b = to_numpy(a), to_numpy(b)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)
