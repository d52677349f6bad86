"""`python -m cifar_lightning.summary`: see cifar_lightning/tools/summary.py."""

from cifar_lightning.tools.summary import main

if __name__ == "__main__":
    main()
