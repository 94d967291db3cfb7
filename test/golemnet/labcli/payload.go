package labcli

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// payloadBlock is how many bytes the payload generator makes per step.
const payloadBlock = 64 << 10

// Payload is a deterministic byte stream: the same size always gives the
// same bytes, and a shorter payload is a prefix of a longer one. The HTTP
// server of the lab serves it and clients check what they got against
// PayloadSHA256, with no file on either side.
type Payload struct {
	state uint64
	left  int64
	buf   [payloadBlock]byte
	off   int
	fill  int
}

// NewPayload returns the first size bytes of the stream.
func NewPayload(size int64) *Payload {
	return &Payload{state: 0x676f6c656d766e70, left: max(size, 0)} // "golemvnp"
}

// Read fills p with the next bytes of the stream.
func (g *Payload) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.left > 0 {
		if g.off == g.fill {
			g.refill()
		}
		c := copy(p[n:], g.buf[g.off:min(g.fill, g.off+int(min(g.left, int64(len(p)-n))))])
		g.off += c
		g.left -= int64(c)
		n += c
	}
	return n, nil
}

// refill makes the next block with splitmix64: fast, and enough to defeat
// any compression or deduplication on the way.
func (g *Payload) refill() {
	for i := 0; i < payloadBlock; i += 8 {
		g.state += 0x9e3779b97f4a7c15
		z := g.state
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(g.buf[i:], z^(z>>31))
	}
	g.off, g.fill = 0, payloadBlock
}

// PayloadSHA256 returns the hex SHA-256 of the first size bytes.
func PayloadSHA256(size int64) string {
	h := sha256.New()
	io.Copy(h, NewPayload(size))
	return hex.EncodeToString(h.Sum(nil))
}

// FileSHA256 returns the size and hex SHA-256 of a file.
func FileSHA256(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// maxServeSize bounds one response of serve-http.
const maxServeSize = 64 << 30

// servePayload writes the payload to w, at most rate bytes per second when
// rate > 0, until done.
func servePayload(ctx context.Context, w io.Writer, size, rate int64) error {
	g := NewPayload(size)
	buf := make([]byte, 32<<10)
	start := time.Now()
	var sent int64
	for {
		n, err := g.Read(buf)
		if err == io.EOF {
			return nil
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		sent += int64(n)
		if f, ok := w.(http.Flusher); ok && rate > 0 {
			f.Flush()
		}
		if rate > 0 {
			due := start.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
	}
}

const serveUsage = `gvpn-lab serve-http — a tiny HTTP server for lab payloads (the demo and the
tests run it inside a node through RunProcess).

Usage:
  gvpn-lab serve-http [--listen ADDR]

It serves:
  GET /data?size=N[&rate=R]   N deterministic bytes (default 8 MiB), at most R
                              bytes per second when R > 0; sizes take k, M, G
                              suffixes (powers of 1024)
  GET /sha256?size=N          the hex SHA-256 of those N bytes
  GET /                       this text

Examples (with a lab up):
  gvpn-lab exec node-a -- $(command -v gvpn-lab) serve-http
  gvpn-lab exec node-b -- curl -s http://node-a:8080/sha256?size=1M

Flags:
`

func serveHTTP(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve-http", serveUsage, stdout)
	listen := fs.String("listen", ":8080", "`address` to listen on")
	if _, code, ok := parseFlags(fs, args, stderr, 0); !ok {
		return code
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail(stderr, "serve-http", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/data", func(w http.ResponseWriter, r *http.Request) {
		size, rate, err := payloadQuery(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("X-Payload-Sha256", PayloadSHA256(size))
		if r.Method == http.MethodHead {
			return
		}
		start := time.Now()
		err = servePayload(r.Context(), w, size, rate)
		fmt.Fprintf(stderr, "serve-http: %s %s: %d bytes in %.2fs (%v)\n", r.RemoteAddr, r.URL, size, time.Since(start).Seconds(), errOrOK(err))
	})
	mux.HandleFunc("/sha256", func(w http.ResponseWriter, r *http.Request) {
		size, _, err := payloadQuery(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, PayloadSHA256(size))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		host, _ := os.Hostname()
		fmt.Fprintf(w, "hello from %s (gvpn-lab serve-http)\n\n%s", host, serveUsage[:len(serveUsage)-len("Flags:\n")])
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintf(stdout, "serve-http: listening on %s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fail(stderr, "serve-http", err)
	}
	return 0
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func payloadQuery(r *http.Request) (size, rate int64, err error) {
	size = 8 << 20
	q := r.URL.Query()
	if s := q.Get("size"); s != "" {
		if size, err = ParseSize(s); err != nil {
			return 0, 0, fmt.Errorf("size: %w", err)
		}
	}
	if size > maxServeSize {
		return 0, 0, fmt.Errorf("size %d is over %d", size, int64(maxServeSize))
	}
	if s := q.Get("rate"); s != "" {
		if rate, err = ParseSize(s); err != nil {
			return 0, 0, fmt.Errorf("rate: %w", err)
		}
	}
	return size, rate, nil
}

// ParseSize parses a byte count: digits with an optional k, M or G suffix
// (powers of 1024, case-insensitive, an optional trailing "B" or "iB").
func ParseSize(s string) (int64, error) {
	orig := s
	mult := int64(1)
	for _, suf := range []string{"iB", "B", "b"} {
		if len(s) > len(suf) && s[len(s)-len(suf):] == suf {
			s = s[:len(s)-len(suf)]
			break
		}
	}
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			mult, s = 1<<10, s[:len(s)-1]
		case 'm', 'M':
			mult, s = 1<<20, s[:len(s)-1]
		case 'g', 'G':
			mult, s = 1<<30, s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a byte count (like 512, 64k, 8M)", orig)
	}
	return n * mult, nil
}
