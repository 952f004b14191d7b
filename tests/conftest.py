"""Shared fixtures: a tiny synthetic identity built once per test session."""
import os

import pytest

os.environ.setdefault("GT_QUIET", "1")  # no progress bars in test logs


@pytest.fixture(scope="session")
def tiny_identity(tmp_path_factory):
    """A 3 s, 64 px synthetic identity (read-only: copy it before changing files)."""
    from gt_train.data.synthetic import SyntheticConfig, make_synthetic_identity

    out = tmp_path_factory.mktemp("identity") / "tiny"
    return make_synthetic_identity(SyntheticConfig(out_dir=out, seconds=3.0, size=64, seed=0))


@pytest.fixture(scope="session")
def speech_identity(tmp_path_factory):
    """An 8 s, 64 px synthetic identity for the training tests (read-only)."""
    from gt_train.data.synthetic import SyntheticConfig, make_synthetic_identity

    out = tmp_path_factory.mktemp("identity") / "speech8s"
    return make_synthetic_identity(SyntheticConfig(out_dir=out, seconds=8.0, size=64, seed=0, progress=False))
