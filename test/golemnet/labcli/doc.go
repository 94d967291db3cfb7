// Package labcli is the command line of gvpn-lab: a whole Golem VPN on one
// machine (golemnet.Lab) for a first demo, manual debugging and scripts.
//
// Subcommands: demo, up, exec, status, fault, and the hidden serve-http
// that the demo runs inside a node. Results go to stdout (tables, or JSON
// with --json), progress and errors to stderr; bad input gives one line on
// stderr and exit code 2, a failure exit code 1.
package labcli
