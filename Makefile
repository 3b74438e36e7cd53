# The two commands of the README.
HOST ?= 127.0.0.1
PORT ?= 8080
MODEL ?= reactive

.PHONY: run test setup
run: setup  ## set up everything and serve the demo page on http://$(HOST):$(PORT)/
	.venv/bin/microturn serve --host $(HOST) --port $(PORT) --model $(MODEL)

test:  ## set up everything (with test tools) and run the whole test suite
	scripts/test.sh

setup:
	scripts/setup.sh
