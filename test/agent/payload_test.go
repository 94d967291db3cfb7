package agent

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

// The test binary doubles as a payload program: a test runs it inside the
// payload through RunProcess (the agent execs it) with payloadEnv set.
const payloadEnv = "GVPN_TEST_PAYLOAD"

func payloadBytes(n int) []byte {
	r := rand.New(rand.NewPCG(7, uint64(n)))
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
	case "udp-seq-recv": // args: listen address, idle timeout
		idle, _ := time.ParseDuration(os.Args[2])
		err = seqReceive(os.Args[1], idle)
	case "udp-seq-send": // args: destination, count, interval
		count, _ := strconv.Atoi(os.Args[2])
		every, _ := time.ParseDuration(os.Args[3])
		err = seqSend(os.Args[1], count, every)
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
