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

bench: ## Go micro-benchmarks
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for t in FuzzNormalizePath FuzzParseRules FuzzGlob; do \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} ./rules || exit 1; done
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $${FUZZTIME:-30s} ./authz

lint: ## gofmt, go vet, and lint the example rules
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)
	$(GO) vet $(PKGS)
	$(GO) run ./cmd/egress-authz rules lint deploy/examples/rules.yaml

image: ## build the container image (needs a Docker engine)
	docker build -t egress-authz:dev .

clean:
	rm -rf bin data
