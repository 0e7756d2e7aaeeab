"""The command-line scripts; each module's ``main(argv)`` backs a top-level ``X.py`` wrapper."""
