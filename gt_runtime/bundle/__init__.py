"""The gt bundle: the one input of the runtime (reader, writer and synthetic bundles).

    from gt_runtime.bundle import Bundle, write_bundle, update_manifest

`format` reads and writes the directory ``NAME.gtb/``; `synthetic` writes random but
valid bundles of any size for tests and benchmarks. The shapes and file names a bundle
holds are declared in `gt_runtime.contract`.
"""
from gt_runtime.bundle.format import (
    Bundle,
    intrinsics_matrix,
    sha256_file,
    update_manifest,
    weight_shapes,
    write_bundle,
)

__all__ = ["Bundle", "intrinsics_matrix", "sha256_file", "update_manifest", "weight_shapes", "write_bundle"]
