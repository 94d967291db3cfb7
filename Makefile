# gvpn — Golem VPN for Provider-side ExeUnit runtimes.
# `make help` lists the targets. Privileged targets (test, demo, bench) must
# run as root: they create network namespaces and TAP devices.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/gvpn/gvpn/runtime/cli.Version=$(VERSION) -X github.com/gvpn/gvpn/vsock/agent.Version=$(VERSION) -X github.com/gvpn/gvpn/test/golemnet/labcli.Version=$(VERSION)
BINARIES  := $(patsubst cmd/%,bin/%,$(wildcard cmd/*))
PREFIX    ?= /usr/local
FUZZTIME  ?= 30s
# Debian packages the tests and the demo use for real payload traffic,
# busybox-static for image roots, and e2fsprogs: mkfs.ext4 makes the
# activity's size-limited disk (--storage-gib).
DEB_DEPS  := iproute2 iputils-ping iperf3 curl libcap2-bin busybox-static e2fsprogs
DEB_CMDS  := ip ping iperf3 curl setcap busybox mkfs.ext4
# What the VM sandbox and its tests need (and the image tests, netns and test/image: mksquashfs): QEMU, dpkg-deb and apt-get download
# for the guest image and a Debian task package, mksquashfs for that package.
VM_DEPS   := qemu-system-x86 squashfs-tools
VM_CMDS   := qemu-system-x86_64 mksquashfs dpkg-deb

.PHONY: install-provider all build deps vm-deps vm-image deps-images images demo-docker lab-docker bench-docker test test-short fuzz bench demo lab vet fmt-check install clean help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: $(BINARIES) ## static binaries in bin/

bin/%: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

FORCE:

deps: ## install what a fresh Debian machine lacks (iproute2, ping, iperf3, curl, setcap, busybox-static, mkfs.ext4)
	@missing=""; for c in $(DEB_CMDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing $(DEB_DEPS) (missing:$$missing)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $(DEB_DEPS) >/dev/null; \
	fi

# The Docker lab's images are built offline: debootstrap makes the base.
deps-images: ## install debootstrap if missing (make images needs it)
	@command -v debootstrap >/dev/null 2>&1 || { \
		echo "installing debootstrap"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null; }

images: build deps-images ## the Docker lab's images, offline (the debootstrap base is cached in /var/cache/gvpn-lab)
	bin/gvpn-lab images --bin bin --dockerfile Dockerfile

demo-docker: images ## the demo with every node and the hub a container of its own
	bin/gvpn-lab demo --docker --bin bin --dockerfile Dockerfile

lab-docker: images ## a 3-node lab in containers until Ctrl-C (node-c's payload in a container of its own)
	bin/gvpn-lab up --docker --nodes 3 --agent-nodes 1 --bin bin --dockerfile Dockerfile

bench-docker: images ## image sizes, container start-to-ready, Docker vs local lab throughput; writes its section of docs/BENCHMARKS.md
	bin/gvpn-lab bench-docker --bin bin --dockerfile Dockerfile --out docs/BENCHMARKS.md

vm-deps: ## install what the VM sandbox needs (QEMU, squashfs-tools)
	@missing=""; for c in $(VM_CMDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing $(VM_DEPS) (missing:$$missing)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $(VM_DEPS) >/dev/null; \
	fi

vm-image: vm-deps build ## guest kernel and initramfs for --sandbox vm in bin/vm/ (Debian packages, cached)
	$(GO) run ./runtime/sandbox/agent/vm/mkimage -cache bin/vm/debs -agent bin/gvpn-agent -out bin/vm

test: deps vm-image deps-images build ## all tests with the race detector (as root the privileged ones run too, the VM and Docker ones too)
	$(GO) vet ./...
	GVPN_DOCKER_BINDIR=$(CURDIR)/bin $(GO) test -race -count=1 -timeout 20m ./...

test-short: ## unit tests only, no root needed
	$(GO) test -short -count=1 ./...

fuzz: ## run every fuzzer for FUZZTIME each
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

# The commit `make bench` rebuilds and measures interleaved with this tree,
# for its "no loss" verdict: "recorded" is the one docs/BENCHMARKS.md says
# it measured; any git revision works; empty skips the comparison.
BENCH_BASE ?= recorded

bench: deps build ## throughput and RTT through gvpn vs a veth baseline and vs BENCH_BASE's binaries, interleaved; writes docs/BENCHMARKS.md
	$(GO) run ./test/bench -runtime bin/gvpn-runtime -out docs/BENCHMARKS.md -base '$(BENCH_BASE)'

demo: deps build ## a 3-node Golem VPN on this machine: ping, HTTP by hostname, throughput
	bin/gvpn-lab demo

lab: deps build ## a 3-node lab until Ctrl-C (then: bin/gvpn-lab exec node-b -- ping node-a)
	bin/gvpn-lab up --nodes 3

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

install: build ## install binaries into $(PREFIX)/bin
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BINARIES) $(DESTDIR)$(PREFIX)/bin/

# A provider's install (docs/provider.md). The binary belongs to root and the
# provider user's group, mode 0750: with file capabilities, whoever can run it
# holds CAP_SYS_ADMIN and CAP_DAC_OVERRIDE while it runs, so nobody else may.
# install sets owner and mode first, setcap last (a chown clears file
# capabilities). A provider that runs as root needs no capabilities:
# FILE_CAPS= (empty) skips setcap.
PLUGINS        ?= /usr/lib/yagna/plugins
PROVIDER_GROUP ?=
RUNTIME_BIN    ?= bin/gvpn-runtime
FILE_CAPS      ?= cap_net_admin,cap_sys_admin,cap_sys_chroot,cap_dac_override+ep

install-provider: ## as root: RUNTIME_BIN into PLUGINS/gvpn (root:PROVIDER_GROUP 0750, FILE_CAPS) and the descriptor
	@test -n "$(PROVIDER_GROUP)" || { echo "set PROVIDER_GROUP to the group of the user that runs the provider, e.g. PROVIDER_GROUP=$$(id -gn)"; exit 2; }
	@test -f "$(RUNTIME_BIN)" || { echo "$(RUNTIME_BIN) missing: make build first"; exit 2; }
	install -d -m 0755 "$(PLUGINS)/gvpn"
	install -o root -g "$(PROVIDER_GROUP)" -m 0750 "$(RUNTIME_BIN)" "$(PLUGINS)/gvpn/gvpn-runtime"
	$(if $(FILE_CAPS),setcap "$(FILE_CAPS)" "$(PLUGINS)/gvpn/gvpn-runtime")
	install -m 0644 docs/ya-runtime-gvpn.json "$(PLUGINS)/ya-runtime-gvpn.json"

clean:
	rm -rf bin
