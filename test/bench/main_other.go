//go:build !linux

// Command bench measures gvpn's datapath; it needs Linux (namespaces, TAP).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench: Linux only (network namespaces, TAP devices)")
	os.Exit(1)
}
