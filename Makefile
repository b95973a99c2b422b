# Two commands do all set-up on a fresh Debian 12 machine with Rust: `make up` and `make test`.
.PHONY: up down test bench deps test-deps build lint

CARGO ?= cargo

deps:
	@scripts/deps.sh

# What only the tests need: schemathesis for the OpenAPI test.
test-deps:
	@scripts/test-deps.sh

build:
	$(CARGO) build --workspace --bins

up: deps build
	@scripts/up.sh

down:
	@scripts/down.sh

# The end-to-end tests start the real binaries (built here) against the real services.
test: deps test-deps build
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=4

# Built with the same feature set as the services (one build), then run from target/release.
bench: deps
	$(CARGO) build --release --workspace --bins
	$${CARGO_TARGET_DIR:-target}/release/bench
	$${CARGO_TARGET_DIR:-target}/release/bench_backup
	$${CARGO_TARGET_DIR:-target}/release/bench_migrate
	$${CARGO_TARGET_DIR:-target}/release/bench_cells
	$${CARGO_TARGET_DIR:-target}/release/bench_lists
	$${CARGO_TARGET_DIR:-target}/release/bench_vhosts
	$${CARGO_TARGET_DIR:-target}/release/bench_hosts

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
