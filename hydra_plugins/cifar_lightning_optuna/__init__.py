"""``hydra/sweeper=optuna``: cifar-lightning's Optuna sweeper (see ``sweeper.py``)."""
