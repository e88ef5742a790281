"""``python -m kangae.cli`` (and ``torchrun -m kangae.cli train ...``)."""

from . import main

main()
