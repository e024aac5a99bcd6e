"""The `faultlab` command line: matrix, run, list, explain, sweep, kernel."""
from faultlab.cli.main import main

__all__ = ["main"]
