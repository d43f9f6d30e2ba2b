# The two user-facing commands. Both set up .venv/ first (idempotent, skipped when up to date).
.PHONY: run test lint setup

run: setup  ## the main job: ONI on NetHack with the embedded SmolLM2 judge (offline, a few minutes on 2 cores)
	.venv/bin/vlmrl train nethack_oni_default

test: setup  ## run the default (fast) test suite
	.venv/bin/python -m pytest -q

lint: setup  ## ruff check and ruff format --check over the whole tree
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

setup:
	bash scripts/setup.sh
