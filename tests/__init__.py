"""gt's tests: a package, so that test modules import their support by name (tests.support, tests.cuda_emu)."""
