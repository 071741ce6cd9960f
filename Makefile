# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test lint unit demo chart-test
test: lint unit chart-test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

demo:
	@echo "make demo: coming with the operator (issue 4)"

# Helm chart, alert rules (promtool) and dashboard checks; no cluster needed.
chart-test:
	bash scripts/check-chart.sh
