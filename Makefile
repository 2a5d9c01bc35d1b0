# corral: the targets people expect. Everything that needs root (apt, dockerd) says so when
# it is not run as root, with the command that fixes it.
#
#   make build    swift build (debug)
#   make test     PostgreSQL (for the session store's PostgreSQL cases), build, then swift
#                 test (the tests that bound this process's memory, named
#                 memoryBound…, in a second process of their own), then the console's browser
#                 tests (scripts/test-console.sh) and E2B's SDK against corrald
#                 (scripts/test-e2b.sh); CORRAL_REQUIRE_ENGINE=1 makes engine, browser and SDK
#                 tests fail instead of skip when no engine, browser or SDK is there (CI sets it)
#   make engine   start dockerd with runsc and a TLS endpoint, unless an engine answers
#   make postgres start the private PostgreSQL (scripts/postgres.sh up); postgres-down stops it
#   make image    engine, then corral/base:bookworm (reused unless REBUILD=1)
#   make run      prepare the machine (packages, engine, image, build), then the demo
#   make bench    engine, image, PostgreSQL, then corral-bench in release mode (.build/bench.json;
#                 the session suite measures the PostgreSQL store beside the files and pgbench),
#                 then the console's benchmark in Chromium (.build/console-bench.json) and E2B's
#                 SDK beside corral's own client (.build/e2b-bench.json)
#   make fuzz     engine, image, build, then schemathesis against a live corrald
#                 (scripts/fuzz-api.sh; CORRAL_FUZZ_SECONDS bounds it)
#   make fmt      swift format, in place
#   make check    swift format lint --strict, shell syntax, warnings-as-errors build
#   make clean    remove build products (the engine and its images stay)

SWIFT ?= swift
FORMAT_PATHS := Sources Tests Package.swift bench/link-protocols/Sources bench/link-protocols/Package.swift
SHELL_SCRIPTS := scripts/engine.sh scripts/postgres.sh scripts/deps.sh scripts/demo.sh \
	scripts/check-init.sh scripts/fuzz-api.sh scripts/fleet.sh scripts/test-console.sh \
	scripts/test-e2b.sh scripts/test-fleet.sh scripts/lib/common.sh images/base/build.sh .ci/run

# CORRAL_REQUIRE_ENGINE, CORRAL_ENGINE and CORRAL_TEST_IMAGE reach the tests when set in the
# environment or on the command line (make exports both). Not `export`ed here: that would
# pass them as empty strings when unset, and an empty CORRAL_ENGINE is not the default.

.PHONY: build test engine engine-down postgres postgres-down image run run-replicas bench bench-link fuzz fmt check clean deps

build:
	$(SWIFT) build

# At most TEST_WIDTH tests at once (Swift Testing's own limit; unbounded by default). With all
# ~480 at once on two cores the cooperative pool was so crowded that a 0.4 s test took over a
# minute and a worker's heartbeat went unanswered past its grace; with 8 the run also ended sooner.
TEST_WIDTH ?= 8

test: postgres
	$(SWIFT) build
	eval "$$(scripts/postgres.sh env)" && SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH=$(TEST_WIDTH) $(SWIFT) test --skip memoryBound
	$(SWIFT) test --skip-build --filter memoryBound
	scripts/test-console.sh
	scripts/test-e2b.sh

deps:
	scripts/deps.sh

engine:
	scripts/engine.sh up

engine-down:
	scripts/engine.sh down

postgres:
	scripts/postgres.sh up

postgres-down:
	scripts/postgres.sh down

image: engine
	images/base/build.sh

run: deps image build
	scripts/demo.sh

# Two corrald replicas over one private PostgreSQL: a tenant and a session shared, an agent
# run taken over when the replica running it is killed (scripts/demo-replicas.sh).
run-replicas: deps image build postgres
	scripts/demo-replicas.sh

bench: image postgres
	$(SWIFT) build -c release
	eval "$$(scripts/postgres.sh env)" && .build/release/corral-bench --json .build/bench.json
	scripts/test-console.sh --bench
	scripts/test-e2b.sh --bench

# The worker link's HTTP/2 beside gRPC (grpc-swift-2), a package of its own: its first build
# compiles gRPC's dependencies (minutes), so it is not part of `make bench`.
bench-link:
	$(SWIFT) build -c release --package-path bench/link-protocols
	bench/link-protocols/.build/release/link-protocols

fuzz: image build
	scripts/fuzz-api.sh

fmt:
	$(SWIFT) format --in-place --recursive $(FORMAT_PATHS)

check:
	$(SWIFT) format lint --strict --recursive $(FORMAT_PATHS)
	bash -n $(SHELL_SCRIPTS)
	@if command -v shellcheck >/dev/null 2>&1; then shellcheck -x $(SHELL_SCRIPTS); \
	else echo "shellcheck not installed; shell scripts only syntax-checked"; fi
	$(SWIFT) build -Xswiftc -warnings-as-errors

clean:
	$(SWIFT) package clean
	rm -rf .build/images .build/bench.json
