package linktest

import (
	"io"
	"net"
)

// ReaderConn is the read side of a net.Conn over r, to drive a stream
// decoder (a fuzzer's bytes) without sockets. Only Read and Close work;
// Close does nothing.
func ReaderConn(r io.Reader) net.Conn { return readerConn{r: r} }

type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }
func (c readerConn) Close() error               { return nil }
