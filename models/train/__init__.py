"""Training pipeline of the linli garbage detector (PyTorch, CPU). Run ``python -m models.train --help``."""
