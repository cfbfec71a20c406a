"""The recipes: one module per pipeline step, each with its training loop in plain view.

``pretrain``, ``partition``, ``distill``, ``evaluate``, ``ablate`` and ``compare`` take a
``Session`` and callbacks for progress, never parse arguments or print, and return a small
result dataclass whose ``to_dict()`` is the command's ``--json`` output.
"""
