package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// The test binary doubles as a payload program: a test runs it inside a
// sandbox through RunProcess with GVPN_TEST_PAYLOAD set, and it serves or
// exchanges real traffic through the kernel's sockets on the VPN.
const payloadEnv = "GVPN_TEST_PAYLOAD"

// payloadBytes returns n deterministic pseudo-random bytes, the body the
// HTTP payload serves, so the client side can check the hash.
func payloadBytes(n int) []byte {
	r := rand.New(rand.NewPCG(42, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func payloadHash(n int) string {
	h := sha256.Sum256(payloadBytes(n))
	return hex.EncodeToString(h[:])
}

// runPayload runs the payload named by the environment, if any, and exits.
func runPayload() {
	mode := os.Getenv(payloadEnv)
	if mode == "" {
		return
	}
	var err error
	switch mode {
	case "http-serve": // args: listen address
		err = serveHTTP(os.Args[1])
	case "udp-echo": // args: listen address
		err = udpEcho(os.Args[1])
	case "udp-ping": // args: server address, count
		count, _ := strconv.Atoi(os.Args[2])
		err = udpPing(os.Args[1], count)
	default:
		err = fmt.Errorf("unknown payload %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "payload:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveHTTP serves /bytes/N: N deterministic bytes.
func serveHTTP(addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n > 1<<30 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(payloadBytes(n))
	})
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening", l.Addr())
	return http.Serve(l, mux)
}

func udpEcho(addr string) error {
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening", c.LocalAddr())
	buf := make([]byte, 65535)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		c.WriteTo(buf[:n], from)
	}
}

// udpPing sends count numbered datagrams and counts the echoes.
func udpPing(server string, count int) error {
	c, err := net.Dial("udp4", server)
	if err != nil {
		return err
	}
	defer c.Close()
	got := 0
	buf := make([]byte, 2048)
	for i := range count {
		msg := fmt.Sprintf("datagram %d %s", i, string(make([]byte, 200)))
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		if string(buf[:n]) == msg {
			got++
		}
	}
	fmt.Printf("echoed %d/%d\n", got, count)
	if got < count*9/10 {
		return fmt.Errorf("only %d of %d datagrams echoed", got, count)
	}
	return nil
}

var _ = io.EOF
