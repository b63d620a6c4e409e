"""``python -m afictl`` (also what ``torchrun -m afictl train ...`` runs)."""

from afictl.cli.app import main

if __name__ == "__main__":
    main()
