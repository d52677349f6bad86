"""`python -m cifar_lightning.report`: see cifar_lightning/tools/report.py."""

from cifar_lightning.tools.report import main

if __name__ == "__main__":
    main()
