// Package image reads a requestor's task package: the file the ExeUnit
// downloads from the demand's image URL and passes as --task-package.
// Open detects the format, checks the whole package and returns what a
// sandbox needs to make it the payload's root and to start the payload's
// processes with the image's settings (Config). A wrong or corrupt package
// is refused by Open (or by Extract, for an archive whose layers are bad)
// with an error that names the file and what is wrong, so that deploy fails
// before anything starts.
//
// # Formats
//
// FormatSquashfs: a bare squashfs file system (magic "hsqs"). The
// superblock's bytes_used is the file system's size; what follows it up to
// the end of the file must be zeros (mksquashfs pads to 4 KiB). It has no
// settings.
//
// FormatGVMI: Golem's VM image, as gvmkit-build writes it and ya-runtime-vm
// reads it: a squashfs (padded as above), then a trailer of three parts:
//
//	[squashfs ... padding][CRC32 of JSON, 4 bytes LE][JSON][len(JSON), 8 ASCII decimal digits]
//
// The JSON is Docker's container config (Env, Entrypoint, Cmd, WorkingDir,
// User, Volumes, ...). For the 26-byte JSON {"Env":["A=1"],"User":"0"},
// whose CRC32 (IEEE) is 0x833a7697, the file ends in
//
//	97 76 3a 83  7b 22 45 6e ... 22 30 22 7d  30 30 30 30 30 30 32 36
//	CRC32 (LE)   {"Env":["A=1"],"User":"0"}   "00000026"
//
// A reader finds the
// JSON from the end: the last 8 bytes give its length, the 4 bytes before
// it its checksum; the squashfs is everything before the checksum and must
// hold the superblock's bytes_used.
//
// FormatDockerArchive and FormatOCI: the output of `docker save` (a tar
// with manifest.json) and an OCI image layout in a tar (oci-layout and
// index.json at its top). Both are read with go-containerregistry; Extract
// flattens the layers (whiteouts applied) into a directory, refusing
// entries that would leave it and skipping device nodes. The settings come
// from the image config's "config" object, which has the same fields as the
// GVMI's JSON.
package image
