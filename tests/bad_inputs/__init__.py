"""The bad-input corpus: a package so its conftest imports as bad_inputs.conftest, not as tests/conftest."""
