# syntax=docker/dockerfile:1
#
# egress-authz: a static binary on a distroless base, run as a non-root user,
# with no shell and no package manager in the image. Health is checked by
# Kubernetes' probes on the admin port (/healthz, /readyz), so the image has
# no HEALTHCHECK.
#
#   make image            # docker build -t egress-authz:dev .
#
# Keep GO_VERSION in step with the go line of go.mod (a test checks it).
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# No separate "go mod download": go build fetches only what the binary
# imports, into the cache mount, and not the modules only tests use.
# deploy/ (its own module, with Kubernetes, Istio and kustomize for the
# manifest tests) is not in the build context at all (.dockerignore).
COPY . .
ARG VERSION=dev
# Static (no cgo, so no libc to ship), reproducible paths, no symbol table.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/egress-authz ./cmd/egress-authz
# The working directory of the runtime image, writable by the non-root user,
# so that the defaults (./data/...) work in a plain docker run.
RUN mkdir -p /out/var/lib/egress-authz

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="egress-authz" \
      org.opencontainers.image.description="Envoy ext_authz server deciding which workloads may reach which external hosts through an Istio egress gateway" \
      org.opencontainers.image.source="https://github.com/egress-authz/egress-authz" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/egress-authz /usr/local/bin/egress-authz
COPY --from=build --chown=65532:65532 /out/var/lib/egress-authz /var/lib/egress-authz
WORKDIR /var/lib/egress-authz
# distroless's nonroot user, by number so that Kubernetes' runAsNonRoot can
# verify it without reading /etc/passwd.
USER 65532:65532
# ext_authz gRPC; admin HTTP (health, metrics, rules, decisions).
EXPOSE 9191 9192
ENTRYPOINT ["/usr/local/bin/egress-authz"]
CMD ["help"]
