"""Command-line tools that use the package: ``python -m pkkd_lightning.tools.op_counter``."""
