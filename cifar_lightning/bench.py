"""`python -m cifar_lightning.bench`: see cifar_lightning/tools/bench.py."""

from cifar_lightning.tools.bench import main

if __name__ == "__main__":
    main()
