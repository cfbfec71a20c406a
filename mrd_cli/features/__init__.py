"""Turn transcripts (CSV files of dialogues) and optional audio into the community feature files.

- ``layouts``: the CSV layouts (MELD, EmoryNLP, generic with mapped column names) read into
  ``Conversations``, with every user mistake refused before anything is computed;
- ``speakers``: speaker names -> the MELD layout's one-hot slots;
- ``text``: a local Hugging Face encoder, mean-pooled per layer, with an embedding cache;
- ``audio``: openSMILE functionals per utterance;
- ``writer``: the MELD-layout pickles, the manifest and the dataset YAML;
- ``build``: the whole path, usable without the CLI.

The heavy dependencies (transformers, opensmile) live in the optional extra ``features``;
``require`` says how to install them when they are missing.
"""

from __future__ import annotations

import importlib.util

from mrd_cli.errors import MRDError

INSTALL_HINT = "pip install -e '.[features]'"


def require(*modules: str) -> None:
    """Refuse with the install line when a module of the ``features`` extra is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MRDError(
            f"`mrd features` needs {', '.join(missing)}, from the optional extra 'features': "
            f"run `{INSTALL_HINT}` (or pip install 'mrd-cli[features]')."
        )
