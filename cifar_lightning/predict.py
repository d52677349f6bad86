"""`python -m cifar_lightning.predict`: see cifar_lightning/run/predict.py."""

from cifar_lightning.run.predict import main

if __name__ == "__main__":
    main()
