"""`python -m cifar_lightning.reproduce`: see cifar_lightning/tools/reproduce.py."""

from cifar_lightning.tools.reproduce import main

if __name__ == "__main__":
    main()
