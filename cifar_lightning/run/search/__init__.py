"""Hyper-parameter search on Optuna: the search space, the study's storage, pruning, and the
ask-launch-tell loop that ``hydra/sweeper=optuna`` (hydra_plugins/cifar_lightning_optuna) runs.
"""
