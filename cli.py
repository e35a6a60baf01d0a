"""Entry point: ``python cli.py fit --config configs/digits_pkkd.yaml`` (see ``pkkd_lightning/cli.py``)."""

from pkkd_lightning.cli import cli_main

if __name__ == "__main__":
    cli_main()
