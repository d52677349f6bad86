"""`python -m cifar_lightning.export`: see cifar_lightning/run/export.py."""

from cifar_lightning.run.export import main

if __name__ == "__main__":
    main()
