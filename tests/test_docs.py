"""Generated documentation stays generated: the README's transition table is the model's output."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_transition_table_is_the_models_output():
    spec = importlib.util.spec_from_file_location("update_docs", ROOT / "scripts" / "update_docs.py")
    update_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_docs)
    readme = (ROOT / "README.md").read_text()
    assert update_docs.render(readme) == readme, "README is stale: run python scripts/update_docs.py"
    assert "`__pkvm_host_force_reclaim_page_guest` | 0 | NOPAGE -> OWNED | NOPAGE | OWNED -> POISON |" in readme
