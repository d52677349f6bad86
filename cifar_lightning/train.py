"""`python -m cifar_lightning.train`: see cifar_lightning/run/train.py."""

from cifar_lightning.run.train import main

if __name__ == "__main__":
    main()
