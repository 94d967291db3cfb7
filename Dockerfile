# gvpn images.
#
#   docker build --target runtime -t gvpn .   # the binaries on a minimal base (needs a registry)
#   docker build --target test -t gvpn-test . # binaries + tools + test binaries
#
# The test image runs the privileged suites in a container:
#   docker run --rm --privileged gvpn-test
# (--privileged because the tests create network namespaces, bind mounts and
# TAP devices; --cap-add NET_ADMIN --device /dev/net/tun is enough for the
# tap and netcfg packages alone.)

# The lab image (gvpn-lab up --docker, test/docker): the binaries from
# `make build` on a Debian with the payload tools. `make images` builds it
# offline, FROM a base imported from a debootstrap root file system, with a
# context holding only bin/:
#   docker build --target lab --build-arg BASE=gvpn-base:<tag> -f Dockerfile <dir with bin/>
# With a registry, any Debian image does as the base (the tools are
# installed when missing). This stage comes first so that the classic
# builder, which builds every stage before its target, needs nothing else.
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS lab
RUN missing=; for c in ip ping iperf3 curl; do command -v $c >/dev/null || missing=1; done; \
    [ -z "$missing" ] || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iproute2 iputils-ping iperf3 curl && rm -rf /var/lib/apt/lists/*; }
COPY bin/gvpn-runtime bin/gvpn-agent bin/gvpn-lab /usr/local/bin/
CMD ["gvpn-lab", "--help"]

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build
# Test binaries, each beside its package's sources, so that its testdata is
# where it looks (the working directory) and the test image needs no Go
# toolchain. A package without tests writes none; a compile error fails the
# build.
RUN go list -f '{{.ImportPath}} {{.Dir}}' ./... | while read -r p d; do \
      CGO_ENABLED=1 go test -race -c -o "$d/pkg.test" "$p" || exit 1; \
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
COPY --from=build /src/ /src/
# The integration tests use these binaries instead of building their own.
ENV GVPN_TEST_BINDIR=/usr/local/bin
WORKDIR /src
CMD ["sh", "-c", "for t in $(find /src -name pkg.test | sort); do echo \"== $t\"; (cd \"$(dirname \"$t\")\" && ./pkg.test -test.count=1) || exit 1; done"]
