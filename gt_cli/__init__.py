"""The `gt` command: a thin typer layer over the library functions of gt_runtime, gt_train and gt_export."""
