"""cifar-lightning: CIFAR-10 experiments with PyTorch Lightning and Hydra."""

__version__ = "0.2.0"
