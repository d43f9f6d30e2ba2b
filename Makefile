# The two user-facing commands. Both set up .venv/ first (idempotent, skipped when up to date).
.PHONY: run test setup

run: setup  ## run the main job on its embedded default
	.venv/bin/vlmrl train

test: setup  ## run the default (fast) test suite
	.venv/bin/python -m pytest -q

setup:
	bash scripts/setup.sh
