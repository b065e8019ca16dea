package ingress

import (
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Limits bound what one client can make a listener hold.
type Limits struct {
	// ReadHeaderTimeout closes a connection whose request headers are not
	// complete in time (slowloris).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers (HTTP/1.1, plus
	// net/http's 4 KiB slack) and the header list (HTTP/2); beyond it the
	// client gets 431.
	MaxHeaderBytes int
	// MaxConcurrentStreams bounds the requests in flight on one HTTP/2
	// connection.
	MaxConcurrentStreams int
}

// DefaultLimits are the gateway's listener limits: 10 s for headers (what
// the gateway always had), 90 s idle, 64 KiB of headers (Envoy's default is
// 60 KiB), 250 streams per HTTP/2 connection.
func DefaultLimits() Limits {
	return Limits{
		ReadHeaderTimeout:    10 * time.Second,
		IdleTimeout:          90 * time.Second,
		MaxHeaderBytes:       64 << 10,
		MaxConcurrentStreams: 250,
	}
}

// NewServer is an HTTP server for a gateway listener: HTTP/1.1 and HTTP/2
// over cleartext (prior knowledge, as gRPC clients speak it), or over TLS
// (ALPN) when served with ServeTLS and a TLSConfig, within lim.
// There is no read or write timeout on purpose: requests and responses may
// stream for as long as the backend's own timeout allows.
func NewServer(h http.Handler, lim Limits, log *zap.Logger) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	protos.SetHTTP2(true) // over TLS, when served with a TLSConfig
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		Protocols:         &protos,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: lim.MaxConcurrentStreams,
		},
	}
	if log != nil {
		srv.ErrorLog = zap.NewStdLog(log.Named("http"))
	}
	return srv
}
