// Package labcli is the command line of gvpn-lab: a whole Golem VPN on one
// machine (golemnet.Lab) for a first demo, manual debugging and scripts.
//
// Subcommands: demo, up, exec, status, fault, images, bench-docker, and
// the hidden serve-http and ping that the demo runs inside a node. With
// --docker, up and demo run every node and the hub in a container of
// their own; inside them run the hidden docker-node (the ExeUnit stand-in
// and its relay to the hub) and docker-hub (the Golem Net). demo and up
// are written once over a lab back-end (labBackend): localLab or
// dockerLab. Results go to stdout (tables, or JSON with --json), progress
// and errors to stderr; bad input gives one line on stderr and exit code
// 2, a failure exit code 1.
package labcli
