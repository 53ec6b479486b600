package servertest

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Proxy forwards loopback TCP connections to a target and can be cut like a network
// partition: while cut it forwards nothing in either direction and dials nothing, but closes
// no socket, so both ends wait as they would for a peer behind a broken link (until their own
// timeouts or keepalives give up). Restore resumes forwarding where it stopped; no byte is
// lost or reordered.
type Proxy struct {
	target string
	ln     net.Listener

	mu     sync.Mutex
	cut    bool
	change *sync.Cond // broadcast on cut/restore/close
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// proxyDialTimeout bounds the dial to the target.
const proxyDialTimeout = 5 * time.Second

// NewProxy starts a proxy to target for t, closed when t ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// StartProxy listens on a free loopback port and forwards each connection to target
// (host:port); Close it when done.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy to %s: %w", target, err)
	}
	p := &Proxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.change = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Cut stops forwarding, keeping every socket open.
func (p *Proxy) Cut() { p.set(true) }

// Restore resumes forwarding.
func (p *Proxy) Restore() { p.set(false) }

func (p *Proxy) set(cut bool) {
	p.mu.Lock()
	p.cut = cut
	p.mu.Unlock()
	p.change.Broadcast()
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.change.Broadcast()
	_ = p.ln.Close()
	p.wg.Wait()
}

// waitOpen blocks while the proxy is cut; false means it was closed.
func (p *Proxy) waitOpen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.cut && !p.closed {
		p.change.Wait()
	}
	return !p.closed
}

// track remembers c for Close; false means the proxy is closed (and c was closed).
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (p *Proxy) untrack(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects c to the target once the proxy is not cut, then pipes both ways.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	if !p.waitOpen() {
		return
	}
	up, err := net.DialTimeout("tcp", p.target, proxyDialTimeout)
	if err != nil {
		return
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, c); done <- struct{}{} }()
	go func() { p.pipe(c, up); done <- struct{}{} }()
	<-done
	// One side ended: end the other, as a proxy in the path would.
	_ = c.Close()
	_ = up.Close()
	<-done
}

// pipe copies src to dst, holding each chunk read while the proxy is cut.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitOpen() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or closed: serve ends both sides
		}
	}
}

// String describes the proxy.
func (p *Proxy) String() string {
	return "proxy 127.0.0.1:" + strconv.Itoa(p.Port()) + " -> " + p.target
}
