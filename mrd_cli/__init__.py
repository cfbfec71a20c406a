"""mrd: Mutual Refinement Distillation for multimodal emotion recognition in conversations.

The importable core lives in ``mrd_cli.core`` (losses, partition, curriculum, training,
metrics), ``mrd_cli.data`` (feature-file formats, synthetic data, device tensors) and
``mrd_cli.models`` (the dialogue network); ``mrd_cli.cli`` is a thin Typer layer over them.
"""

__version__ = "0.1.0"
