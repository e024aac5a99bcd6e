"""Draw the sweep heatmaps docs/routines.md and the README show (docs/img/*.png).

    python scripts/plot_sweeps.py            # needs matplotlib (pip install -e '.[plot]')

Each picture is `faultlab sweep ROUTINE --lengths A-B --policy ... --plot FILE`:
every boundary position for every length, so the pictures are dense.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faultlab.cli.main import main  # noqa: E402

PICTURES = {
    "sweep_copy_from_user.png": ["__arch_copy_from_user", "--lengths", "0-24", "--policy", "inject", "--policy", "inject-reclaim", "--policy", "reclaim"],
    "sweep_full_name_hash.png": ["full_name_hash", "--lengths", "0-12", "--policy", "panic", "--policy", "inject", "--policy", "rme-gpc-el3-inject"],
}


def draw_all(out_dir: Path = ROOT / "docs" / "img") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for name, argv in PICTURES.items():
        status = main(["sweep", *argv, "--plot", str(out_dir / name)])
        if status != 0:
            raise SystemExit(f"faultlab sweep {' '.join(argv)}: exit {status}")
        done.append(out_dir / name)
    return done


if __name__ == "__main__":
    for path in draw_all():
        print(path.relative_to(ROOT))
