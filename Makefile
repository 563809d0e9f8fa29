# egress-authz — the make targets are the interface.
GO        ?= go
BIN       := bin/egress-authz
PKGS      := ./...
LDFLAGS   := -s -w
# Pinned, and run with go run pkg@version, which leaves go.mod alone.
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
export CGO_ENABLED ?= 0

.PHONY: build run test bench fuzz lint image clean

build: ## build the static binary into bin/
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/egress-authz

run: build ## serve the example rules on :9191 (admin on 127.0.0.1:9192)
	./$(BIN) serve --rules deploy/examples/rules.yaml --plaintext

# deploy/ is a module of its own, so that Kubernetes, Istio and kustomize
# (its tests' dependencies) stay out of the server's go.mod: test and lint
# run in it too.
test: ## the whole suite of both modules, with the race detector (installs PostgreSQL, NGINX, Chromium and promtool for their tests if missing)
	./scripts/ensure-postgres
	./scripts/ensure-nginx
	./scripts/ensure-chromium
	./scripts/ensure-prometheus
	CGO_ENABLED=1 $(GO) test -race -timeout 15m $(PKGS)
	cd deploy && CGO_ENABLED=1 $(GO) test -race -timeout 15m ./...

bench: build ## Go micro-benchmarks, then the load test against a no-op server (report in loadtest/results)
	$(GO) test -run '^$$' -bench . -benchmem ./rules ./authz ./internal/audit/...
	$(GO) build -o bin/loadtest ./loadtest
	./bin/loadtest compare --rules 10000 --concurrency 64 --duration 5s --rounds 2 --audit none,parquet,sqlite --ids random --out loadtest/results
	./bin/loadtest memory --rules 100000 --cache 100000

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for t in FuzzNormalizePath FuzzParseRules FuzzGlob FuzzParseCases; do \
		$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} ./rules || exit 1; done
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $${FUZZTIME:-30s} ./authz
	$(GO) test -run '^$$' -fuzz '^FuzzHTTP$$' -fuzztime $${FUZZTIME:-30s} ./authz

lint: ## gofmt; go mod tidy, go vet and staticcheck in both modules; lint the example rules
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)
	$(GO) mod tidy -diff
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)
	cd deploy && $(GO) mod tidy -diff && $(GO) vet ./... && $(STATICCHECK) ./...
	$(GO) run ./cmd/egress-authz rules lint deploy/examples/rules.yaml

image: ## build the container image (needs a Docker engine); IMAGE=name:tag to rename
	docker build \
		--build-arg VERSION=$$(git describe --tags --always --dirty 2>/dev/null || echo dev) \
		--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		-t $${IMAGE:-egress-authz:dev} .

clean:
	rm -rf bin data
