# Shortcuts; the scripts are the entry points (a fresh Debian has no make).
.PHONY: setup test demo bench lint docs

setup:
	bash scripts/setup.sh

test:
	./scripts/test.sh

demo:
	./scripts/demo.sh

# README.md and docs/*.md from the parts in docs/readme/.
docs: setup
	.venv/bin/python scripts/readme.py

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python -m bench ingest
	.venv/bin/python -m bench monitors
