"""`python -m cifar_lightning.evaluate`: see cifar_lightning/run/evaluate.py."""

from cifar_lightning.run.evaluate import main

if __name__ == "__main__":
    main()
