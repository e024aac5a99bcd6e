"""The corpus files are bad on purpose: tests/test_bad_inputs.py runs them; pytest's scenario plugin must not collect them."""
collect_ignore_glob = ["*.toml", "*.elf"]
