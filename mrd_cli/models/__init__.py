"""The networks: the dialogue network shared by the multimodal and the text model, and the
other backbones M_multi can use (``registry.py``: dialogue, foal, dual)."""
