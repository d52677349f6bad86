"""`python -m cifar_lightning.airbench_compare`: see cifar_lightning/tools/airbench_compare.py."""

from cifar_lightning.tools.airbench_compare import main

if __name__ == "__main__":
    main()
