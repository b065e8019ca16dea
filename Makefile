# SPRIGHT for Knative. Targets that touch eBPF, netns or hugepages need root.
GO        ?= go
BIN       ?= bin
CHAIN     ?= config/samples/hello/chain.yaml
LISTEN    ?= 127.0.0.1:8080
ADMIN     ?= 127.0.0.1:9091
HUGEPAGES ?= 128
FUZZTIME  ?= 30s

.PHONY: all build generate check-generate test test-short bench bench-quick run hugepages fuzz soak vet clean ko-resolve cluster-up cluster-down e2e-cluster

all: build

build:
	$(GO) build -o $(BIN)/spright ./cmd/spright
	$(GO) build -o $(BIN)/gateway ./cmd/gateway
	$(GO) build -o $(BIN)/eproxy ./cmd/eproxy
	$(GO) build -o $(BIN)/controller ./cmd/controller
	$(GO) build -o $(BIN)/webhook ./cmd/webhook

# Rebuild the eBPF object and its Go bindings (clang, llvm-strip).
generate:
	$(GO) generate ./bpf/ ./bpf/redirect/

# CI: the committed eBPF objects (bpf/ and bpf/redirect/) must be what the
# committed C compiles to.
check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files are out of date: run 'make generate' and commit"; exit 1; }

vet:
	$(GO) vet ./...

# The README's test command. Runs as root: real eBPF, netns, hugepages.
test: vet
	$(GO) test -count=1 -timeout 20m ./...

test-short:
	$(GO) test -count=1 -short ./...

# Reserve hugepages for the chain pools (the pool falls back to normal
# pages, with a log line, when there are none).
hugepages:
	@cur=$$(cat /proc/sys/vm/nr_hugepages); if [ "$$cur" -lt "$(HUGEPAGES)" ]; then echo $(HUGEPAGES) > /proc/sys/vm/nr_hugepages; fi; grep -i hugepages_ /proc/meminfo

# Start the sample chain (hello: curl -d abc http://127.0.0.1:8080/ -> CBA).
# Adapters chain.yaml names in a "# spright-attach: T=NAME" line (the web
# adapter of config/samples/boutique) are attached once the chain is up.
run: build hugepages
	hack/run-chain.sh $(BIN)/spright $(CHAIN) $(LISTEN) $(ADMIN)

# The benchmark suite (test/bench/README.md): every scenario against the
# Knative path, then test/bench/RESULTS.md and the plots from the JSON.
# One scenario: make bench BENCHFLAGS=chain2 (or spright bench chain2).
bench: hugepages
	$(GO) run ./test/bench $(BENCHFLAGS)

bench-quick: hugepages
	$(GO) run ./test/bench --quick $(BENCHFLAGS)

# Fixed-time fuzzing campaigns on the parsers (seeds in testdata/fuzz/):
# descriptors, HTTP ingestion, control-socket messages (decoding of every
# type, and whole sessions against a live gateway), MQTT, CoAP, CloudEvents.
fuzz:
	$(GO) test ./pkg/descriptor -run '^$$' -fuzz FuzzUnmarshal -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/gateway -run '^$$' -fuzz FuzzIngest -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/control -run '^$$' -fuzz FuzzRecv -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/gateway -run '^$$' -fuzz FuzzControl -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/adapter/mqtt -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/adapter/mqtt -run '^$$' -fuzz FuzzSession -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/adapter/coap -run '^$$' -fuzz FuzzDatagram -fuzztime $(FUZZTIME)
	$(GO) test ./pkg/adapter/cloudevents -run '^$$' -fuzz FuzzIngress -fuzztime $(FUZZTIME)

# Resolve the Knative install's ko:// images offline (local registry and base
# image; see test/ko/README.md); writes $(BIN)/ko/resolved.yaml.
ko-resolve:
	hack/ko-resolve.sh -f config/ -o $(BIN)/ko/resolved.yaml

# Fault handling under load, long: wrk for 60 s with a function kill -9 and
# gateway restarts (SIGTERM, then kill -9), then a 10-minute soak with the
# same faults once a minute; each checks lost requests, the pool's free
# count, goroutines and fds. (`go test` runs a 15 s version by default.)
SOAKTIME ?= 10m
soak: hugepages
	SPRIGHT_SOAK=1 SPRIGHT_SOAK_DURATION=$(SOAKTIME) $(GO) test -count=1 -v -timeout 30m ./test/e2e -run '^(TestFaultsUnderLoad|TestSoak)$$'

# A real one-node Kubernetes + Knative Serving 1.15 on this machine
# (hack/cluster-up.sh; docs/knative.md "Try it on one machine"). Builds the
# kube binaries and images on first use (cached); needs root.
cluster-up: hugepages
	hack/cluster-up.sh

cluster-down:
	hack/cluster-down.sh

# The cluster test (test/cluster): brings the cluster up if needed, installs
# SPRIGHT as docs/knative.md says and drives it with the real kn.
e2e-cluster: hugepages
	SPRIGHT_CLUSTER_REQUIRED=1 $(GO) test -count=1 -v -timeout 60m ./test/cluster

# Knative's KIngress conformance suite (knative.dev/networking
# test/conformance/ingress, the pinned version) against the SPRIGHT ingress
# on the running cluster (make cluster-up): builds the suite's test images
# with ko into the cluster's registry, runs it, writes
# test/conformance/RESULTS.md (ko and kubectl: PATH, else the hack/ tools).
.PHONY: conformance-ingress
conformance-ingress:
	test/conformance/run.sh

clean:
	rm -rf $(BIN)
