"""The training ETA prices each stage's remaining iterations at that stage's own recent rate."""
import pytest

from gt_train.eta import StageEta


def _run(eta: StageEta, start: int, stop: int, t: float, sec: float) -> float:
    """Record iterations start+1..stop taking `sec` seconds each from time t -> the time at the end."""
    for it in range(start + 1, stop + 1):
        t += sec
        eta.record(it, t)
    return t


def test_no_estimate_before_a_rate_is_measured():
    eta = StageEta(iterations_canonical=100, total=200)
    eta.record(0, 0.0)
    assert eta.remaining(0) is None and eta.rate(0) is None


def test_canonical_stage_prices_deformation_at_the_prior_cost():
    eta = StageEta(iterations_canonical=100, total=200, deform_cost=2.0)
    eta.record(0, 0.0)
    _run(eta, 0, 40, 0.0, 0.1)
    # 60 canonical at 0.1 s + 100 deformation at 2 x 0.1 s
    assert eta.remaining(40) == pytest.approx(60 * 0.1 + 100 * 0.2)
    assert eta.rate(40) == pytest.approx(10.0)


def test_deformation_stage_uses_its_measured_rate_not_the_run_average():
    eta = StageEta(iterations_canonical=100, total=200, window=20)
    eta.record(0, 0.0)
    t = _run(eta, 0, 100, 0.0, 0.1)        # canonical: 10 it/s
    t = _run(eta, 100, 130, t, 0.25)       # deformation: 4 it/s
    left = eta.remaining(130)
    assert left == pytest.approx(70 * 0.25)
    average = (200 - 130) * t / 130         # the old estimate: whole-run average rate
    assert average < 0.7 * left
    assert eta.rate(130) == pytest.approx(4.0)
    assert eta.remaining(200) == 0.0


def test_first_deformation_iteration_is_timed_from_the_stage_boundary():
    eta = StageEta(iterations_canonical=10, total=20)
    eta.record(0, 0.0)
    t = _run(eta, 0, 10, 0.0, 1.0)
    eta.record(11, t + 3.0)
    assert eta.seconds_per_iteration("deform") == pytest.approx(3.0)
    assert eta.remaining(11) == pytest.approx(9 * 3.0)


def test_window_follows_a_change_of_speed():
    eta = StageEta(iterations_canonical=1000, total=1000, window=10)
    eta.record(0, 0.0)
    t = _run(eta, 0, 100, 0.0, 1.0)
    _run(eta, 100, 120, t, 0.5)             # the last 10 iterations all at 0.5 s
    assert eta.remaining(120) == pytest.approx(880 * 0.5)


def test_resumed_in_the_deformation_stage():
    eta = StageEta(iterations_canonical=100, total=200)
    eta.record(150, 0.0)
    assert eta.remaining(150) is None
    _run(eta, 150, 160, 0.0, 0.3)
    assert eta.remaining(160) == pytest.approx(40 * 0.3)
