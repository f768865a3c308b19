// go-interop is the quic-go client of the interop matrix
// (__test__/interop-matrix.test.mjs). It covers what the general client
// (../go-h3client) does not: TLS session resumption and 0-RTT, and a report
// of what each connection negotiated.
//
//	go-interop --url https://127.0.0.1:PORT --get /hello [--resume] [--early]
//
// With --resume a first connection fetches --get and waits for a session
// ticket; the measured connection then dials with the same session cache
// (quic.DialAddrEarly). With --early its requests are sent as GET_0RTT, that
// is before the handshake completes when the ticket allows 0-RTT. Set QLOGDIR
// to get one qlog per connection from quic-go itself.
//
// One JSON object is printed: {"ok", "first", "connection"}, each connection
// with didResume, used0RTT, cipherSuite and its responses (status, bytes,
// sha256). Exit status 0 when every request was answered, else 1.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/qlog"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type response struct {
	Path   string `json:"path"`
	Status int    `json:"status"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	Error  string `json:"error,omitempty"`
}

type connReport struct {
	DidResume   bool       `json:"didResume"`
	Used0RTT    bool       `json:"used0RTT"`
	CipherSuite string     `json:"cipherSuite"`
	Responses   []response `json:"responses"`
	Error       string     `json:"error,omitempty"`
}

// ticketCache records when a session ticket has been stored.
type ticketCache struct {
	tls.ClientSessionCache
	got chan struct{}
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	if cs != nil {
		select {
		case c.got <- struct{}{}:
		default:
		}
	}
}

func run(ctx context.Context, addr, base string, paths []string, tlsConf *tls.Config, early bool, waitTicket chan struct{}) connReport {
	var rep connReport
	quicConf := &quic.Config{
		Tracer:                     qlog.DefaultConnectionTracer,
		MaxStreamReceiveWindow:     16 << 20,
		MaxConnectionReceiveWindow: 64 << 20,
		Allow0RTT:                  true,
	}
	conn, err := quic.DialAddrEarly(ctx, addr, tlsConf, quicConf)
	if err != nil {
		rep.Error = "connection failed: " + err.Error()
		return rep
	}
	defer conn.CloseWithError(0x100, "")
	tr := &http3.Transport{TLSClientConfig: tlsConf, QUICConfig: quicConf, DisableCompression: true}
	defer tr.Close()
	cc := tr.NewClientConn(conn)
	for _, p := range paths {
		method := http.MethodGet
		if early {
			method = http3.MethodGet0RTT
		}
		r := response{Path: p}
		req, err := http.NewRequestWithContext(ctx, method, base+p, nil)
		if err == nil {
			var resp *http.Response
			resp, err = cc.RoundTrip(req)
			if err == nil {
				h := sha256.New()
				r.Status = resp.StatusCode
				r.Bytes, err = io.Copy(h, resp.Body)
				resp.Body.Close()
				r.SHA256 = hex.EncodeToString(h.Sum(nil))
			}
		}
		if err != nil {
			r.Error = err.Error()
		}
		rep.Responses = append(rep.Responses, r)
	}
	select {
	case <-conn.HandshakeComplete():
	case <-ctx.Done():
	}
	if waitTicket != nil {
		select {
		case <-waitTicket:
		case <-time.After(5 * time.Second):
			rep.Error = "no session ticket within 5 s"
		}
	}
	cs := conn.ConnectionState()
	rep.DidResume = cs.TLS.DidResume
	rep.Used0RTT = cs.Used0RTT
	rep.CipherSuite = tls.CipherSuiteName(cs.TLS.CipherSuite)
	return rep
}

func main() {
	var gets multiFlag
	base := flag.String("url", "", "https://host:port")
	flag.Var(&gets, "get", "path to GET (repeatable)")
	resume := flag.Bool("resume", false, "resume a session from a first connection")
	early := flag.Bool("early", false, "send the requests as 0-RTT (GET_0RTT)")
	timeout := flag.Float64("timeout", 30, "seconds")
	flag.Parse()
	u, err := url.Parse(*base)
	if err != nil || u.Scheme != "https" || u.Port() == "" || len(gets) == 0 {
		fmt.Fprintln(os.Stderr, "usage: go-interop --url https://host:port --get PATH [--resume] [--early]")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*timeout*float64(time.Second)))
	defer cancel()
	cache := &ticketCache{tls.NewLRUClientSessionCache(4), make(chan struct{}, 1)}
	tlsConf := &tls.Config{
		ServerName:         u.Hostname(),
		NextProtos:         []string{http3.NextProtoH3},
		InsecureSkipVerify: true,
		ClientSessionCache: cache,
	}
	out := map[string]any{}
	ok := true
	check := func(r connReport) {
		if r.Error != "" {
			ok = false
		}
		for _, x := range r.Responses {
			if x.Error != "" {
				ok = false
			}
		}
	}
	if *resume {
		first := run(ctx, u.Host, *base, gets[:1], tlsConf, false, cache.got)
		out["first"] = first
		check(first)
	}
	second := run(ctx, u.Host, *base, gets, tlsConf, *early, nil)
	out["connection"] = second
	check(second)
	out["ok"] = ok
	_ = json.NewEncoder(os.Stdout).Encode(out)
	if !ok {
		os.Exit(1)
	}
}
