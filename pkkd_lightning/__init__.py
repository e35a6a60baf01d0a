"""pkkd-lightning: Adder Neural Networks trained with Progressive Kernel-based Knowledge Distillation."""

__version__ = "0.1.0"
