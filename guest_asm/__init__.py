"""AArch64 host-kernel routines written for pkvm-faultlab, as kernel-style `.S` sources."""
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent


def source_path(name: str) -> Path:
    """Path of the `.S` file for routine file `name` (without suffix)."""
    return SOURCE_DIR / f"{name}.S"
