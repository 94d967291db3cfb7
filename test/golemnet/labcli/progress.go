package labcli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress shows what a multi-step command is doing on stderr. On a
// terminal one line is rewritten in place (with the step's elapsed time
// ticking) and each finished step leaves one line; elsewhere (logs, CI)
// every update is a plain line of its own.
type progress struct {
	w     io.Writer
	tty   bool
	width int // terminal columns; the live line is cut to fit, or it would wrap
	total int

	mu     sync.Mutex
	step   int
	title  string
	detail string
	start  time.Time
	shown  bool // a rewritable line is on screen

	stop chan struct{}
	done chan struct{}
}

// newProgress draws on w; width > 0 means w is a terminal that wide.
func newProgress(w io.Writer, width int, total int) *progress {
	p := &progress{w: w, tty: width > 0, width: width, total: total, stop: make(chan struct{}), done: make(chan struct{})}
	tty := p.tty
	if tty {
		go p.tick()
	} else {
		close(p.done)
	}
	return p
}

func (p *progress) tick() {
	defer close(p.done)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			select {
			case <-p.stop: // Close won the lock first: draw nothing more
			default:
				if p.step > 0 {
					p.render()
				}
			}
			p.mu.Unlock()
		}
	}
}

// render draws the live line; p.mu is held.
func (p *progress) render() {
	line := fmt.Sprintf("[%d/%d] %s", p.step, p.total, p.title)
	if p.detail != "" {
		line += ": " + p.detail
	}
	elapsed := fmt.Sprintf(" … %.1fs", time.Since(p.start).Seconds())
	if r := []rune(line); len(r)+len([]rune(elapsed)) >= p.width {
		line = string(r[:max(p.width-len([]rune(elapsed))-2, 0)]) + "…"
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s%s", line, elapsed)
	p.shown = true
}

// clear removes the live line; p.mu is held.
func (p *progress) clear() {
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}

// Step starts step n.
func (p *progress) Step(n int, title string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.step, p.title, p.detail, p.start = n, title, "", time.Now()
	if p.tty {
		p.render()
	} else {
		fmt.Fprintf(p.w, "[%d/%d] %s\n", n, p.total, title)
	}
}

// Detail says what the current step is doing now.
func (p *progress) Detail(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.detail = fmt.Sprintf(format, args...)
	if p.tty {
		p.render()
	} else {
		fmt.Fprintf(p.w, "      %s\n", p.detail)
	}
}

// Done ends the current step with a one-line result.
func (p *progress) Done(result string) {
	if p.tty {
		p.end("✓", result)
	} else {
		p.end("ok", result)
	}
}

// Failed ends the current step with its error.
func (p *progress) Failed(err error) {
	mark := "FAILED"
	if p.tty {
		mark = "✗"
	}
	p.end(mark, strings.ReplaceAll(err.Error(), "\n", " | "))
}

func (p *progress) end(mark, result string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.step == 0 {
		return
	}
	p.clear()
	line := fmt.Sprintf("%s [%d/%d] %s", mark, p.step, p.total, p.title)
	if result != "" {
		line += ": " + result
	}
	fmt.Fprintf(p.w, "%s (%.1fs)\n", line, time.Since(p.start).Seconds())
	p.step = 0
}

// Println prints a line above the live line.
func (p *progress) Println(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintln(p.w, s)
	if p.tty && p.step > 0 {
		p.render()
	}
}

// Close stops the ticker and clears the live line. Idempotent.
func (p *progress) Close() {
	p.mu.Lock()
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.clear()
	p.mu.Unlock()
	<-p.done
}
