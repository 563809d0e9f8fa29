# egress-authz — the make targets are the interface.
GO        ?= go
BIN       := bin/egress-authz
PKGS      := ./...
LDFLAGS   := -s -w
export CGO_ENABLED ?= 0

.PHONY: build run test bench fuzz lint image clean

build: ## build the static binary into bin/
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/egress-authz

run: build ## serve the example rules on :9191 (admin on 127.0.0.1:9192)
	./$(BIN) serve --rules deploy/examples/rules.yaml --plaintext

test: ## the whole suite, with the race detector (installs PostgreSQL for its tests if missing)
	./scripts/ensure-postgres
	CGO_ENABLED=1 $(GO) test -race -timeout 15m $(PKGS)

bench: build ## Go micro-benchmarks, then the load test against a no-op server (report in loadtest/results)
	$(GO) test -run '^$$' -bench . -benchmem ./rules ./authz ./internal/audit/...
	$(GO) build -o bin/loadtest ./loadtest
	./bin/loadtest compare --rules 10000 --concurrency 64 --duration 5s --rounds 2 --audit sqlite --out loadtest/results
	./bin/loadtest memory --rules 100000 --cache 100000

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for t in FuzzNormalizePath FuzzParseRules FuzzGlob FuzzParseCases; do \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} ./rules || exit 1; done
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $${FUZZTIME:-30s} ./authz

lint: ## gofmt, go vet, and lint the example rules
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)
	$(GO) vet $(PKGS)
	$(GO) run ./cmd/egress-authz rules lint deploy/examples/rules.yaml

image: ## build the container image (needs a Docker engine); IMAGE=name:tag to rename
	docker build \
		--build-arg VERSION=$$(git describe --tags --always --dirty 2>/dev/null || echo dev) \
		--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		-t $${IMAGE:-egress-authz:dev} .

clean:
	rm -rf bin data
