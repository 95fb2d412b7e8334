"""One module per ``secgan`` subcommand that lives in the shared library.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Heavy imports belong inside ``run`` so ``secgan --help`` stays fast.
"""
