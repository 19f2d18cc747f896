"""The ``asyncfl`` command: one module per command group.

- :mod:`asyncfl.cli.app`: the parser, ``run``, ``resume``, ``validate``, ``schema``, ``data``
- :mod:`asyncfl.cli.study`: ``sweep``, ``plot``, ``report``
- :mod:`asyncfl.cli.bench`: ``bench``
- :mod:`asyncfl.cli.args`: argument types the groups share
"""

from asyncfl.cli.app import main

__all__ = ["main"]
