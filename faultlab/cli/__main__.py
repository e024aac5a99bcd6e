"""`python -m faultlab.cli ...`: the `faultlab` command."""
import sys

from faultlab.cli.main import main

sys.exit(main())
