"""Checks at the SDK's boundary, one module per thing checked.

Every check raises the SDK's typed errors (:mod:`sdk.errors`) with a message that names the file
and says what to do; nothing here deserialises an untrusted file beyond ``json``/``numpy`` with
pickles off.

* :mod:`.values`  — predicates on decoded JSON values (``is_int``, ``int_in``, ``list_of`` ...);
* :mod:`.schema`  — ``manifest.json``: size, types, required keys, ranges;
* :mod:`.paths`   — the bundle root and paths that must stay inside it (symlinks included);
* :mod:`.arrays`  — ``.npy``/``.npz`` files of the bundle and the embedding cache, their shapes;
* :mod:`.graphs`  — whose fault it is when ONNX Runtime cannot load a graph;
* :mod:`.options` — :class:`~sdk.Segmenter` options;
* :mod:`.text`    — user text files and class names.
"""
