#!/bin/sh
# Regenerates runtime.pb.go from runtime.proto.
#
# Only needed after editing runtime.proto: runtime.pb.go is committed, so
# building and testing (CI included) need neither protoc nor protoc-gen-go.
#
# Needs protoc (Debian/Ubuntu: apt-get install protobuf-compiler). Uses
# protoc-gen-go from $PROTOC_GEN_GO, else from PATH if its version matches
# google.golang.org/protobuf in go.mod, else installs that version into a
# temporary GOBIN. Works from any directory; `go generate ./runtime/api`
# runs it too.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

command -v protoc >/dev/null 2>&1 || {
	echo "gen.sh: protoc not found (apt-get install protobuf-compiler)" >&2
	exit 1
}

want=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
plugin=${PROTOC_GEN_GO:-}
if [ -z "$plugin" ]; then
	if found=$(command -v protoc-gen-go 2>/dev/null) &&
		[ "$("$found" --version 2>/dev/null)" = "protoc-gen-go $want" ]; then
		plugin=$found
	else
		gobin=$(mktemp -d)
		trap 'rm -rf "$gobin"' EXIT
		GOBIN=$gobin go install "google.golang.org/protobuf/cmd/protoc-gen-go@$want"
		plugin=$gobin/protoc-gen-go
	fi
fi

# Run from the module root so the descriptor is registered as
# "runtime/api/runtime.proto", a path no other module is likely to use.
protoc -I . \
	--plugin=protoc-gen-go="$plugin" \
	--go_out=. --go_opt=module=github.com/gvpn/gvpn \
	runtime/api/runtime.proto
gofmt -l runtime/api/runtime.pb.go | grep . && { echo "gen.sh: output not gofmt-clean" >&2; exit 1; }
exit 0
