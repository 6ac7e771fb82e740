# The two commands of the README:
#   make run    fetch the default model, build, start cortex (embedded mode)
#   make test   run every test (what CI runs)

.PHONY: run test model build release bench bench-neuron bench-gateway lint fmt

model:
	scripts/fetch-model

build:
	cargo build -p cortex-cli -p neuron

run: model build
	target/debug/cortex serve

test:
	scripts/test

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

release:
	cargo build --release -p cortex-cli -p neuron

bench: bench-neuron bench-gateway

bench-neuron: model release
	scripts/bench-neuron

bench-gateway: release
	scripts/bench-gateway
