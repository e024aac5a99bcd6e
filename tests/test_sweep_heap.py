"""faultlab/sweep/heap.py `setup_frozen`: the setup leaves the collector's sight for the block, and comes back.

Run in a fresh interpreter: the collector's generations are the process's, and a test session
freezes what its collection built (tests/conftest.py).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAP = Path(__file__).resolve().parent.parent / "faultlab" / "sweep" / "heap.py"

CHECK = """
import gc, importlib.util, sys
spec = importlib.util.spec_from_file_location("heap", sys.argv[1])
heap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(heap)
setup = [[i] for i in range(1000)]
assert gc.get_freeze_count() == 0
with heap.setup_frozen():
    inside = gc.get_freeze_count()
    assert inside >= 1000, inside                    # the setup is out of every pass
    made = [[i] for i in range(10)]
    assert gc.get_freeze_count() == inside           # what the block makes is collected as usual
assert gc.get_freeze_count() == 0                    # and all of it comes back afterwards
try:
    with heap.setup_frozen():
        raise KeyError("a failing case")
except KeyError:
    pass
assert gc.get_freeze_count() == 0                    # however the block ends
gc.freeze()
before = gc.get_freeze_count()
with heap.setup_frozen():
    more = [[i] for i in range(10)]
    assert gc.get_freeze_count() == before           # a caller's own freeze is left alone
assert gc.get_freeze_count() == before
print("ok")
"""


def test_setup_frozen_freezes_for_the_block_and_leaves_a_callers_freeze_alone():
    done = subprocess.run([sys.executable, "-c", CHECK, str(HEAP)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
