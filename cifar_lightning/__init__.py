"""cifar-lightning: CIFAR-10 experiments with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
