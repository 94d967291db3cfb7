// Package api is the wire format of the ExeUnit's service protocol
// (ya-runtime-api): the protobuf messages the ExeUnit and a runtime exchange
// over the runtime's stdin and stdout, and their framing.
//
// The messages are generated from runtime.proto, gvpn's own schema with the
// field numbers yagna uses (docs/protocol.md §3). Request flows ExeUnit → runtime,
// Response flows runtime → ExeUnit. Each message on the stream is
// varint(len(body)) ‖ body, with nothing in between (§1.3).
//
// Reader and Writer do the framing. The Reply* and event constructors build
// the only Response shapes the ExeUnit accepts, and ReplyMatches checks the
// rule whose violation makes the ExeUnit panic: a reply carries its request's
// id and its request's variant, or an error.
//
// runtime.pb.go is generated and committed; building needs no protoc. After
// editing runtime.proto run `go generate ./runtime/api` (which runs gen.sh).
package api

//go:generate sh gen.sh
