"""Random bundles for the tests, each distinct one built once per test session.

`RandomBundles(root)(**kw)` is `gt_runtime.bundle.synthetic.make_random_bundle(**kw)` memoised on kw: two test modules
that ask for the same bundle share one build. conftest.py's `random_bundle` fixture is one of these for the whole session.
The bundles are shared: a test that changes files copies the bundle first (shutil.copytree).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


class RandomBundles:
    """make_random_bundle(path, **kw), memoised on kw -> the bundle's path, under root."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._built: dict[str, Path] = {}

    def __call__(self, **kw) -> Path:
        from gt_runtime.bundle.synthetic import make_random_bundle

        key = repr(sorted(kw.items()))
        if key not in self._built:
            name = hashlib.sha1(key.encode()).hexdigest()[:12]
            self._built[key] = make_random_bundle(self.root / f"{name}.gtb", **kw)
        return self._built[key]
