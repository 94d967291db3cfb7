# gvpn images.
#
#   docker build --target runtime -t gvpn .   # the binaries on a minimal base
#   docker build --target test -t gvpn-test . # binaries + tools + test binaries
#
# The test image runs the privileged suites in a container:
#   docker run --rm --privileged gvpn-test
# (--privileged because the tests create network namespaces, bind mounts and
# TAP devices; --cap-add NET_ADMIN --device /dev/net/tun is enough for the
# tap and netcfg packages alone.)

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build
# Test binaries, so the test image needs no Go toolchain.
RUN mkdir /tests && for p in $(go list ./... ); do \
      n=$(echo "$p" | tr / _); \
      CGO_ENABLED=1 go test -race -c -o "/tests/$n.test" "$p" 2>/dev/null || true; \
    done

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /src/bin/ /usr/local/bin/
# gvpn-runtime is started by the ExeUnit supervisor; it needs root (or
# CAP_NET_ADMIN + CAP_SYS_ADMIN) at run time to create namespaces and TAPs.
USER root
ENTRYPOINT ["/usr/local/bin/gvpn-runtime"]
CMD ["--help"]

FROM debian:bookworm-slim AS test
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iproute2 iputils-ping iperf3 curl ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/bin/ /usr/local/bin/
COPY --from=build /tests/ /tests/
COPY --from=build /src/runtime/api/testdata /tests/testdata
WORKDIR /tests
CMD ["sh", "-c", "for t in /tests/*.test; do echo \"== $t\"; (cd /tests && $t -test.v -test.count=1) || exit 1; done"]
