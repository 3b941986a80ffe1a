# The README's two commands: `make demo` (set up + run the default audit) and `make test`.
.PHONY: setup demo test lint bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -m privaudit audit

test:
	bash scripts/setup.sh --with-browser
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/python -m pytest -q tests

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench: setup
	.venv/bin/python bench/run_all.py

clean:
	rm -rf out .pytest_cache .hypothesis
