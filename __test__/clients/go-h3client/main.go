// go-h3client is an independent HTTP/3 test client built on quic-go's http3
// package. The h3node test suite uses it to drive the server with a second
// QUIC/HTTP/3 implementation. Flags and JSON output mirror
// ../aioquic_client.py:
//
//   - the per-connection request list is every --url repeated --count times
//     (--count defaults to --parallel, so "--parallel 100" alone means 100
//     concurrent requests on one connection);
//   - at most --parallel requests are in flight per connection, all of them
//     on ONE QUIC connection (an http3.ClientConn made by http3.Transport);
//   - --connections N opens N independent QUIC connections and runs the whole
//     list on each of them.
//
// One JSON object per response is printed on stdout, then a summary object.
// Exit status: 0 when every request completed (any HTTP status) or was
// deliberately reset via --reset-after, 1 otherwise, 2 for bad arguments.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

const chunkSize = 64 * 1024

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type options struct {
	urls            multiFlag
	headers         multiFlag
	count           int
	method          string
	bodySize        int64
	noContentLength bool
	parallel        int
	connections     int
	insecure        bool
	timeout         float64
	resetAfter      int64 // -1: disabled
	resetMode       string
}

type result struct {
	Status    *int              `json:"status"`
	Headers   map[string]string `json:"headers"`
	Trailers  map[string]string `json:"trailers,omitempty"`
	Bytes     int64             `json:"bytes"`
	SHA256    string            `json:"sha256"`
	StreamID  *int64            `json:"stream_id"`
	URL       string            `json:"url"`
	Conn      int               `json:"conn"`
	Reset     bool              `json:"reset,omitempty"`
	Error     string            `json:"error,omitempty"`
	ElapsedMs float64           `json:"elapsed_ms"`
}

type summary struct {
	Summary    bool    `json:"summary"`
	OK         int     `json:"ok"`
	Failed     int     `json:"failed"`
	Reset      int     `json:"reset"`
	SentSHA256 string  `json:"sent_sha256"`
	ElapsedMs  float64 `json:"elapsed_ms"`
}

var (
	outMu sync.Mutex
	enc   = json.NewEncoder(os.Stdout)
)

func emit(v any) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = enc.Encode(v)
}

// patternBody produces the deterministic request body (byte i = i % 251).
// With resetAfter >= 0 it stops after that many bytes and fails the read,
// which makes http3 reset the request stream.
type patternBody struct {
	off, size  int64
	resetAfter int64
	onReset    func() error
}

func fillPattern(p []byte, off int64) {
	v := byte(off % 251)
	for i := range p {
		p[i] = v
		v++
		if v == 251 {
			v = 0
		}
	}
}

func (b *patternBody) Read(p []byte) (int, error) {
	limit := b.size
	if b.resetAfter >= 0 && b.resetAfter < limit {
		limit = b.resetAfter
	}
	if b.off >= limit {
		if b.resetAfter >= 0 {
			return 0, b.onReset()
		}
		return 0, io.EOF
	}
	n := int64(len(p))
	if n > chunkSize {
		n = chunkSize
	}
	if n > limit-b.off {
		n = limit - b.off
	}
	fillPattern(p[:n], b.off)
	b.off += n
	return int(n), nil
}

func (b *patternBody) Close() error { return nil }

func bodySHA256(size int64) string {
	h := sha256.New()
	buf := make([]byte, chunkSize)
	for off := int64(0); off < size; {
		n := int64(len(buf))
		if n > size-off {
			n = size - off
		}
		fillPattern(buf[:n], off)
		h.Write(buf[:n])
		off += n
	}
	return hex.EncodeToString(h.Sum(nil))
}

// streamIDOf digs the QUIC stream ID out of an http3 response body. quic-go
// does not export it on this path, so this relies on the (unexported)
// layout of the pinned version and returns nil if that layout changes.
func streamIDOf(body io.ReadCloser) (id *int64) {
	defer func() {
		if recover() != nil {
			id = nil
		}
	}()
	v := reflect.ValueOf(body)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	inner := v.Elem().FieldByName("body")
	if !inner.IsValid() || inner.Kind() != reflect.Struct {
		return nil
	}
	str := inner.FieldByName("str")
	if !str.IsValid() || str.Type() != reflect.TypeOf((*http3.Stream)(nil)) {
		return nil
	}
	s := reflect.NewAt(str.Type(), unsafe.Pointer(str.UnsafeAddr())).Elem().Interface().(*http3.Stream)
	if s == nil {
		return nil
	}
	x := int64(s.StreamID())
	return &x
}

func flattenHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		out[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	return out
}

var errClientReset = errors.New("reset by client (--reset-after)")

func describeErr(ctx context.Context, err error) string {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "timeout"
	}
	return err.Error()
}

func doRequest(ctx context.Context, cc *http3.ClientConn, rawURL string, connIdx int, o *options, extraHdr http.Header) (res result) {
	started := time.Now()
	emptySum := sha256.Sum256(nil)
	res = result{Headers: map[string]string{}, SHA256: hex.EncodeToString(emptySum[:]), URL: rawURL, Conn: connIdx}
	defer func() { res.ElapsedMs = float64(time.Since(started).Microseconds()) / 1000 }()

	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	var didReset atomic.Bool
	var body io.ReadCloser
	hasBody := o.bodySize > 0 || o.resetAfter >= 0
	if hasBody {
		body = &patternBody{size: o.bodySize, resetAfter: o.resetAfter, onReset: func() error {
			// let the bytes already written reach the peer before resetting
			time.Sleep(100 * time.Millisecond)
			didReset.Store(true)
			if o.resetMode == "both" {
				cancel() // RESET_STREAM + STOP_SENDING
			}
			return errClientReset // http3 answers this with RESET_STREAM
		}}
	}
	req, err := http.NewRequestWithContext(reqCtx, o.method, rawURL, body)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if hasBody {
		if o.bodySize > 0 && !o.noContentLength {
			req.ContentLength = o.bodySize
		} else {
			req.ContentLength = -1
		}
	}
	for k, vs := range extraHdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}

	resp, err := cc.RoundTrip(req)
	if err != nil {
		if didReset.Load() {
			res.Reset = true
			res.Error = errClientReset.Error()
		} else {
			res.Error = describeErr(ctx, err)
		}
		return res
	}
	defer resp.Body.Close()
	res.StreamID = streamIDOf(resp.Body)
	status := resp.StatusCode
	res.Status = &status
	res.Headers = flattenHeaders(resp.Header)

	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, chunkSize))
	res.Bytes = n
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	if len(resp.Trailer) > 0 {
		res.Trailers = flattenHeaders(resp.Trailer)
	}
	if didReset.Load() {
		res.Reset = true
		if o.resetMode == "both" {
			res.Error = errClientReset.Error()
		}
	}
	if err != nil && res.Error == "" {
		res.Error = describeErr(ctx, err)
	}
	return res
}

func runConnection(ctx context.Context, idx int, addr, serverName string, jobs []string, o *options, extraHdr http.Header, results chan<- result) {
	tlsConf := &tls.Config{
		ServerName:         serverName,
		NextProtos:         []string{http3.NextProtoH3},
		InsecureSkipVerify: o.insecure,
	}
	quicConf := &quic.Config{
		MaxIdleTimeout:             time.Duration(o.timeout*float64(time.Second)) + time.Second,
		MaxStreamReceiveWindow:     16 << 20,
		MaxConnectionReceiveWindow: 64 << 20,
	}
	tr := &http3.Transport{TLSClientConfig: tlsConf, QUICConfig: quicConf, DisableCompression: true}
	defer tr.Close()

	fail := func(msg string) {
		for _, u := range jobs {
			sum := sha256.Sum256(nil)
			results <- result{Headers: map[string]string{}, SHA256: hex.EncodeToString(sum[:]), URL: u, Conn: idx, Error: msg}
		}
	}
	conn, err := quic.DialAddr(ctx, addr, tlsConf, quicConf)
	if err != nil {
		fail("connection failed: " + describeErr(ctx, err))
		return
	}
	var connReset atomic.Bool
	defer func() {
		if connReset.Load() {
			// quic-go sends frames from its own goroutine: give the queued
			// RESET_STREAM/STOP_SENDING frames time to leave before the
			// CONNECTION_CLOSE, so the server observes a stream reset rather
			// than a connection error.
			time.Sleep(250 * time.Millisecond)
		}
		conn.CloseWithError(0, "")
	}()
	cc := tr.NewClientConn(conn)

	sem := make(chan struct{}, o.parallel)
	var wg sync.WaitGroup
	for _, u := range jobs {
		wg.Add(1)
		go func(u string) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				sum := sha256.Sum256(nil)
				results <- result{Headers: map[string]string{}, SHA256: hex.EncodeToString(sum[:]), URL: u, Conn: idx, Error: "timeout"}
				return
			}
			defer func() { <-sem }()
			r := doRequest(ctx, cc, u, idx, o, extraHdr)
			if r.Reset {
				connReset.Store(true)
			}
			results <- r
		}(u)
	}
	wg.Wait()
}

func main() {
	o := &options{}
	fs := flag.NewFlagSet("go-h3client", flag.ContinueOnError)
	fs.Var(&o.urls, "url", "https://host:port/path (repeatable)")
	fs.Var(&o.headers, "header", "name:value (repeatable)")
	fs.IntVar(&o.count, "count", -1, "repeat the URL list N times (default: --parallel)")
	fs.StringVar(&o.method, "method", "GET", "request method")
	fs.Int64Var(&o.bodySize, "body-size", 0, "request body length; byte i is i % 251")
	fs.BoolVar(&o.noContentLength, "no-content-length", false, "do not send content-length for the request body")
	fs.IntVar(&o.parallel, "parallel", 1, "max concurrent requests per connection")
	fs.IntVar(&o.connections, "connections", 1, "number of QUIC connections")
	fs.BoolVar(&o.insecure, "insecure", false, "do not verify the server certificate")
	fs.Float64Var(&o.timeout, "timeout", 30, "overall deadline in seconds")
	fs.Int64Var(&o.resetAfter, "reset-after", -1, "reset the request stream after sending BYTES of body")
	fs.StringVar(&o.resetMode, "reset-mode", "both", "both: RESET_STREAM+STOP_SENDING, response not awaited; send: RESET_STREAM only, response awaited")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	usage := func(msg string) {
		fmt.Fprintln(os.Stderr, "go-h3client:", msg)
		os.Exit(2)
	}
	if len(o.urls) == 0 {
		usage("at least one --url is required")
	}
	if o.count < 0 {
		o.count = max(1, o.parallel)
	}
	if o.parallel < 1 || o.connections < 1 {
		usage("--parallel and --connections must be >= 1")
	}
	if o.resetMode != "both" && o.resetMode != "send" {
		usage("--reset-mode must be both or send")
	}
	o.method = strings.ToUpper(o.method)
	extraHdr := http.Header{}
	for _, h := range o.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			usage(fmt.Sprintf("bad --header %q, expected name:value", h))
		}
		extraHdr.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	var addr, serverName string
	for _, raw := range o.urls {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" {
			usage(fmt.Sprintf("unsupported url %q", raw))
		}
		port := u.Port()
		if port == "" {
			port = "443"
		}
		a := net.JoinHostPort(u.Hostname(), port)
		if addr != "" && a != addr {
			usage("all --url values must share host and port")
		}
		addr, serverName = a, u.Hostname()
	}
	var jobs []string
	for i := 0; i < o.count; i++ {
		jobs = append(jobs, o.urls...)
	}

	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(o.timeout*float64(time.Second)))
	defer cancel()

	expected := len(jobs) * o.connections
	results := make(chan result, expected)
	var conns sync.WaitGroup
	for i := 0; i < o.connections; i++ {
		conns.Add(1)
		go func(i int) {
			defer conns.Done()
			runConnection(ctx, i, addr, serverName, jobs, o, extraHdr, results)
		}(i)
	}
	sum := summary{Summary: true, SentSHA256: bodySHA256(o.bodySize)}
	for i := 0; i < expected; i++ {
		r := <-results
		emit(r)
		switch {
		case r.Error == "":
			sum.OK++
		case r.Reset:
			sum.Reset++
		default:
			sum.Failed++
		}
	}
	conns.Wait() // connections closed cleanly (CONNECTION_CLOSE sent)
	sum.ElapsedMs = float64(time.Since(started).Microseconds()) / 1000
	emit(sum)
	if sum.Failed > 0 {
		os.Exit(1)
	}
}
