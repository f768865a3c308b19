// quic-go-server: quic-go's http3.Server answering the benchmark routes, an optional peer of
// `npm run bench`:
//
//	GET  /         -> "Hello, HTTP/3!"
//	GET  /bytes/N  -> N zero bytes in 64 KiB writes
//	POST /sink     -> the length of the request body, as text
//
// Usage: quic-go-server -addr 127.0.0.1:P -cert PEM -key PEM [-retry]. Prints `listening P`.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

var zeros = make([]byte, 64*1024)
var hello = []byte("Hello, HTTP/3!")

func handler(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/sink":
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", "text/plain;charset=UTF-8")
		_, _ = w.Write([]byte(strconv.FormatInt(n, 10)))
	case strings.HasPrefix(r.URL.Path, "/bytes/"):
		left, _ := strconv.ParseInt(r.URL.Path[len("/bytes/"):], 10, 64)
		w.Header().Set("content-length", strconv.FormatInt(left, 10))
		for left > 0 {
			k := int64(len(zeros))
			if k > left {
				k = left
			}
			if _, err := w.Write(zeros[:k]); err != nil {
				return
			}
			left -= k
		}
	default:
		w.Header().Set("content-type", "text/plain;charset=UTF-8")
		w.Header().Set("content-length", strconv.Itoa(len(hello)))
		_, _ = w.Write(hello)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "UDP address")
	certFile := flag.String("cert", "", "certificate PEM")
	keyFile := flag.String("key", "", "key PEM")
	retry := flag.Bool("retry", false, "stateless Retry for every new connection")
	idle := flag.Int("idle-timeout-ms", 30000, "QUIC idle timeout")
	flag.Parse()
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	udp, err := net.ListenPacket("udp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tr := &quic.Transport{Conn: udp}
	if *retry {
		tr.VerifySourceAddress = func(net.Addr) bool { return true }
	}
	srv := &http3.Server{
		Handler:   http.HandlerFunc(handler),
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		QUICConfig: &quic.Config{
			MaxIdleTimeout:                 time.Duration(*idle) * time.Millisecond,
			MaxIncomingStreams:             256,
			InitialStreamReceiveWindow:     1 << 20,
			MaxStreamReceiveWindow:         16 << 20,
			InitialConnectionReceiveWindow: 4 << 20,
			MaxConnectionReceiveWindow:     24 << 20,
		},
	}
	ln, err := tr.ListenEarly(srv.TLSConfig, srv.QUICConfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %d\n", udp.LocalAddr().(*net.UDPAddr).Port)
	if err := srv.ServeListener(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
