// quic-bench: the quic-go side of `npm run bench` for what oha does not measure.
//
//	quic-bench idle     -url URL -n N [-c P] [-open-seconds S]
//	                                              open N HTTP/3 connections (one GET each; none
//	                                              started after S seconds), print {"event":"ready",...},
//	                                              hold them until stdin closes
//	quic-bench connect  -url URL -d SEC -c W      W workers: new connection, GET, close; report conn/s
//	quic-bench download -url URL/bytes/N          one connection, one GET, body discarded; Gbit/s
//	quic-bench upload   -url URL/sink -bytes N    one connection, one POST of N bytes; Gbit/s
//
// Certificates are not verified (the benchmark uses a throwaway self-signed one).
// Every mode prints one JSON object per line on stdout.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func fail(err error) {
	emit(map[string]any{"event": "error", "error": err.Error()})
	os.Exit(1)
}

var tlsConf = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}

func quicConf() *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:                 60 * time.Second,
		KeepAlivePeriod:                2 * time.Second,
		InitialStreamReceiveWindow:     1 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 4 << 20,
		MaxConnectionReceiveWindow:     24 << 20,
	}
}

type conn struct {
	q  *quic.Conn
	cc *http3.ClientConn
}

func dial(ctx context.Context, tr *quic.Transport, addr *net.UDPAddr) (*conn, error) {
	q, err := tr.Dial(ctx, addr, tlsConf, quicConf())
	if err != nil {
		return nil, err
	}
	h := &http3.Transport{TLSClientConfig: tlsConf, QUICConfig: quicConf(), DisableCompression: true}
	return &conn{q: q, cc: h.NewClientConn(q)}, nil
}

func get(ctx context.Context, c *conn, u string) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	res, err := c.cc.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	if err == nil && res.StatusCode != 200 {
		err = fmt.Errorf("status %d", res.StatusCode)
	}
	return n, err
}

func newTransport() *quic.Transport {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fail(err)
	}
	_ = udp.SetReadBuffer(8 << 20)
	_ = udp.SetWriteBuffer(8 << 20)
	return &quic.Transport{Conn: udp}
}

func target(raw string) *net.UDPAddr {
	u, err := url.Parse(raw)
	if err != nil {
		fail(err)
	}
	a, err := net.ResolveUDPAddr("udp", u.Host)
	if err != nil {
		fail(err)
	}
	return a
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: quic-bench idle|connect|download|upload [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	u := fs.String("url", "", "URL")
	n := fs.Int("n", 1000, "idle: connections to open")
	rate := fs.Int("c", 32, "idle/connect: connections being opened at once")
	dur := fs.Float64("d", 5, "connect: seconds")
	openFor := fs.Float64("open-seconds", 0, "idle: start no connection after this many seconds (0: no limit)")
	size := fs.Int64("bytes", 1<<30, "upload: bytes")
	_ = fs.Parse(os.Args[2:])
	addr := target(*u)
	ctx := context.Background()
	switch mode {
	case "idle":
		idle(ctx, addr, *u, *n, *rate, time.Duration(*openFor*float64(time.Second)))
	case "connect":
		connect(ctx, addr, *u, time.Duration(*dur*float64(time.Second)), *rate)
	case "download":
		download(ctx, addr, *u)
	case "upload":
		upload(ctx, addr, *u, *size)
	default:
		fail(fmt.Errorf("unknown mode %q", mode))
	}
}

// idle opens n connections over a few UDP sockets (one per 1000 connections), each
// with one finished GET, then holds them open (quic-go keep-alives) until stdin closes.
// With openFor > 0, no connection is started after openFor: a server that accepts
// connections slowly is measured on those it took by then ("opened" says how many).
func idle(ctx context.Context, addr *net.UDPAddr, u string, n, par int, openFor time.Duration) {
	start := time.Now()
	var notStarted atomic.Int64
	var transports []*quic.Transport
	for i := 0; i < (n+999)/1000; i++ {
		transports = append(transports, newTransport())
	}
	conns := make([]*conn, n)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if openFor > 0 && time.Since(start) >= openFor {
					notStarted.Add(1)
					continue
				}
				c, err := func() (*conn, error) {
					cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
					defer cancel()
					c, err := dial(cctx, transports[i/1000], addr)
					if err != nil {
						return nil, err
					}
					_, err = get(cctx, c, u)
					return c, err
				}()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	ev := map[string]any{"event": "ready", "opened": n - int(failed.Load()) - int(notStarted.Load()), "failed": failed.Load(), "notStarted": notStarted.Load(), "seconds": time.Since(start).Seconds()}
	if e := firstErr.Load(); e != nil {
		ev["firstError"] = e
	}
	emit(ev)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		if c != nil {
			_ = c.q.CloseWithError(0, "")
		}
	}
	emit(map[string]any{"event": "closed"})
}

// connect runs w workers that each open a connection, do one GET and close it, for d.
func connect(ctx context.Context, addr *net.UDPAddr, u string, d time.Duration, w int) {
	tr := newTransport()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				c, err := dial(cctx, tr, addr)
				if err == nil {
					_, err = get(cctx, c, u)
					_ = c.q.CloseWithError(0, "")
				}
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	s := time.Since(start).Seconds()
	ev := map[string]any{"event": "done", "connections": ok.Load(), "failed": failed.Load(), "seconds": s, "connPerSec": float64(ok.Load()) / s}
	if e := firstErr.Load(); e != nil {
		ev["firstError"] = e
	}
	emit(ev)
}

func download(ctx context.Context, addr *net.UDPAddr, u string) {
	c, err := dial(ctx, newTransport(), addr)
	if err != nil {
		fail(err)
	}
	start := time.Now()
	n, err := get(ctx, c, u)
	s := time.Since(start).Seconds()
	if err != nil {
		fail(err)
	}
	_ = c.q.CloseWithError(0, "")
	emit(map[string]any{"event": "done", "bytes": n, "seconds": s, "gbps": float64(n) * 8 / s / 1e9})
}

type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	k := int64(len(p))
	if k > z.left {
		k = z.left
	}
	clear(p[:k])
	z.left -= k
	return int(k), nil
}

func upload(ctx context.Context, addr *net.UDPAddr, u string, size int64) {
	c, err := dial(ctx, newTransport(), addr)
	if err != nil {
		fail(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, &zeros{left: size})
	req.ContentLength = size
	start := time.Now()
	res, err := c.cc.RoundTrip(req)
	if err != nil {
		fail(err)
	}
	body, _ := io.ReadAll(res.Body)
	s := time.Since(start).Seconds()
	_ = c.q.CloseWithError(0, "")
	var got int64
	_, _ = fmt.Sscan(string(body), &got)
	if got != size {
		fail(fmt.Errorf("server counted %q bytes, sent %d (status %d)", body, size, res.StatusCode))
	}
	emit(map[string]any{"event": "done", "bytes": size, "seconds": s, "gbps": float64(size) * 8 / s / 1e9})
}
