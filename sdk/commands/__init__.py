"""The subcommands of ``python -m sdk``: one module each, all registered the same way.

A command module exposes ``register(sub)``, which adds its sub-parser to ``sub`` (the CLI's
``add_subparsers()`` object) and sets ``handler`` — a function ``(args) -> exit code`` — with
``set_defaults``. :mod:`sdk.cli` lists the modules in ``COMMANDS`` and does the rest (logging,
turning :class:`~sdk.errors.SegmenterError` into one ``error:`` line and exit code 2). Options
that several commands share are declared once in :mod:`sdk.commands.options`. A command module
imports its heavy dependencies (Gradio, Ray, PyTriton) inside its handler, never at module level,
so ``python -m sdk --help`` stays fast and works without the extras.
"""
