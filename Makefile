# oxnotify — the two commands of the README:
#   make test      install what a fresh Debian 12 needs, start the loopback rig, run every test
#   make demo      the main job: rig + server, create/authorize a target via the API, send, show it
# Must run as root (apt-get; the rig's Dovecot/Postfix masters drop privileges themselves).

.PHONY: all deps build lint test demo bench clean

all: build

deps:
	scripts/install-deps.sh

build:
	cargo build --workspace --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test: deps lint
	scripts/run-with-rig.sh scripts/test-all.sh

demo: deps
	scripts/run-with-rig.sh scripts/demo.sh

bench: deps
	scripts/run-with-rig.sh cargo bench -p notify-core --bench send
	cargo build --release -p notify-broker
	scripts/run-with-rig.sh perl perl/bench/broker.pl
	scripts/run-with-rig.sh cargo bench -p notify-core --bench cluster
	# one send against a minimal client, whole processes, a burst, memory (release builds)
	cargo build --release -p notify-perl -p notify-cli
	scripts/run-with-rig.sh env OXNOTIFY_CLI=$(CURDIR)/target/release/oxnotify perl perl/bench/fastpath.pl

clean:
	cargo clean
