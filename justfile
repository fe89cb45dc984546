# Developer shortcuts. Every recipe is a thin wrapper over a script or cargo command, so nothing
# here is needed to build or test (the README's commands do not use just).

default:
    @just --list

# Every test of the workspace (the README's test command).
test *args:
    bash deploy/scripts/test {{args}}

# What CI runs: fmt, clippy, invariants, tests.
ci:
    bash .ci/run

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets --locked -- -D warnings

# ticket-domain must not depend on runtime, storage, transport or clock crates.
purity:
    bash deploy/scripts/check-domain-purity

# The ticket-domain dependency tree, as the architecture invariant is stated.
domain-tree:
    cargo tree -p ticket-domain -e normal
