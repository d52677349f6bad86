"""`python -m cifar_lightning.show_aug`: see cifar_lightning/tools/show_aug.py."""

from cifar_lightning.tools.show_aug import main

if __name__ == "__main__":
    main()
