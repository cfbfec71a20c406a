"""The dialogue network shared by the multimodal and the text model."""
