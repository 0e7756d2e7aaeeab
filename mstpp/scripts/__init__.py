"""The command-line programs. Each module ``X`` has ``main(argv=None) -> int`` and ``build_parser()``;
the top-level ``X.py`` of the repository (and the ``mstpp-X`` entry point) only calls ``main``."""
