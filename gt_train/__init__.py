"""gt_train: the PyTorch side of gt (dataset, model, losses, trainer).

Importing the package is light: torch is imported by the modules that use it,
so `gt --help` and the dataset tools work without torch.
"""
