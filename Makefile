# The README's two commands: `make demo` (set up + run the default audit) and `make test`.
.PHONY: setup demo test bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -m privaudit audit

test:
	bash scripts/setup.sh --with-browser
	.venv/bin/python -m pytest -q tests

bench: setup
	.venv/bin/python bench/run_all.py

clean:
	rm -rf out .pytest_cache .hypothesis
