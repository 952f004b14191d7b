"""Loading gt's compiled extensions (`gt_runtime._raster_cpu`, `gt_runtime._deform_cpu`).

They are optional: the runtime imports without them, and whoever needs one calls
`NativeExtension.load()`, which raises a one-line MissingDependencyError saying how to build it.
"""
from __future__ import annotations

import importlib
import os

from gt_runtime.errors import MissingDependencyError

_BUILD = "run `pip install .` or `python setup.py build_ext --inplace` in the gt checkout"


class NativeExtension:
    """One compiled module of gt_runtime, imported on first use.

    name: the module (e.g. "_raster_cpu"); what: what it is, for the error line; fix: extra advice
    after the build command (e.g. another engine to use).
    """

    def __init__(self, name: str, what: str, fix: str = ""):
        self.name, self.what, self.fix = name, what, fix
        self._module = None

    def load(self):
        """The module, or a one-line MissingDependencyError naming the fix."""
        if self._module is None:
            # Idle OpenMP workers sleep instead of spinning: the raster and the deform kernel share the
            # cores with each other's threads, and spinning workers starve them (3x slower under load).
            # It takes effect only if no OpenMP runtime has started yet in this process.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                self._module = importlib.import_module(f"gt_runtime.{self.name}")
            except ImportError as exc:
                fix = f"{_BUILD}, {self.fix}" if self.fix else _BUILD
                raise MissingDependencyError(f"gt_runtime.{self.name} ({self.what}) is not built ({exc}) | {fix}") from None
        return self._module

    def available(self) -> bool:
        """True if the module imports."""
        try:
            self.load()
            return True
        except MissingDependencyError:
            return False
