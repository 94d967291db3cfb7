// Package payload is a small set of payload programs for the privileged
// tests. A test binary doubles as the program: its TestMain calls
// RunIfAsked, and a test starts the binary itself inside a sandbox (through
// RunProcess) with Env set to a mode. It then serves or exchanges real
// traffic through the kernel's sockets on the VPN.
//
// Modes and their arguments (after the binary's own path):
//
//	http-serve ADDR              serve /bytes/N: the N bytes of Bytes(N)
//	udp-echo ADDR                echo every datagram back to its sender
//	udp-ping SERVER COUNT        send COUNT datagrams one at a time, count the echoes
//	udp-seq-send DST COUNT EVERY send COUNT numbered datagrams, one every EVERY
//	udp-seq-recv ADDR IDLE       receive numbered datagrams until IDLE passes without one
package payload

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// Env is the environment variable that selects the mode.
const Env = "GVPN_TEST_PAYLOAD"

// Bytes returns n deterministic pseudo-random bytes: the body http-serve
// sends, so that the client side can check it by Hash.
func Bytes(n int) []byte {
	r := rand.New(rand.NewPCG(42, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Hash is the hex SHA-256 of Bytes(n), as sha256sum prints it.
func Hash(n int) string {
	h := sha256.Sum256(Bytes(n))
	return hex.EncodeToString(h[:])
}

// RunIfAsked runs the mode named by Env and exits the process (status 1
// with the error on stderr if it failed). Without Env it returns at once.
func RunIfAsked() {
	mode := os.Getenv(Env)
	if mode == "" {
		return
	}
	if err := run(mode, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "payload:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// modes maps each mode to how many arguments it takes and what runs it.
var modes = map[string]struct {
	args int
	run  func(args []string) error
}{
	"http-serve": {1, func(a []string) error { return serveHTTP(a[0]) }},
	"udp-echo":   {1, func(a []string) error { return udpEcho(a[0]) }},
	"udp-ping": {2, func(a []string) error {
		count, err := strconv.Atoi(a[1])
		if err != nil {
			return err
		}
		return udpPing(a[0], count)
	}},
	"udp-seq-send": {3, func(a []string) error {
		count, err := strconv.Atoi(a[1])
		if err != nil {
			return err
		}
		every, err := time.ParseDuration(a[2])
		if err != nil {
			return err
		}
		return seqSend(a[0], count, every)
	}},
	"udp-seq-recv": {2, func(a []string) error {
		idle, err := time.ParseDuration(a[1])
		if err != nil {
			return err
		}
		return seqReceive(a[0], idle)
	}},
}

func run(mode string, args []string) error {
	m, ok := modes[mode]
	if !ok {
		return fmt.Errorf("unknown mode %q", mode)
	}
	if len(args) != m.args {
		return fmt.Errorf("%s takes %d arguments, got %q", mode, m.args, args)
	}
	return m.run(args)
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
		w.Write(Bytes(n))
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

// seqSend sends count datagrams numbered 0…count-1, one every interval.
func seqSend(dst string, count int, every time.Duration) error {
	c, err := net.Dial("udp4", dst)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 100)
	next := time.Now()
	for i := range count {
		copy(buf, fmt.Sprintf("seq %08d", i))
		// Sends fail transiently (ENOBUFS, a neighbour still unresolved);
		// a lost datagram is what the test allows.
		c.Write(buf)
		next = next.Add(every)
		time.Sleep(time.Until(next))
	}
	fmt.Println("sent", count)
	return nil
}

// seqReceive reads numbered datagrams until none came for idle (after the
// first) and reports how many arrived, the highest number, and how many
// arrived after a higher one (reordered or duplicated).
func seqReceive(addr string, idle time.Duration) error {
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("listening", c.LocalAddr())
	buf := make([]byte, 2048)
	got, last, reordered := 0, -1, 0
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return err
		}
		var seq int
		if _, err := fmt.Sscanf(string(buf[:n]), "seq %d", &seq); err != nil {
			continue
		}
		got++
		if seq <= last {
			reordered++
		} else {
			last = seq
		}
		c.SetReadDeadline(time.Now().Add(idle))
	}
	fmt.Printf("received %d last %d reordered %d\n", got, last, reordered)
	return nil
}
