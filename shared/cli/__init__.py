"""The ``contrast`` command-line interface."""
