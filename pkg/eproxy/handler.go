package eproxy

import (
	"net/http"

	"github.com/gogo/protobuf/proto"
	netheader "knative.dev/networking/pkg/http/header"
	"knative.dev/serving/pkg/autoscaler/metrics"
)

// StatSource is what StatHandler serves: a Window, or something that
// switches Windows (EPROXY after the node agent restarted).
type StatSource interface {
	Stat() (metrics.Stat, error)
}

// StatHandler serves a Window's Stat in the autoscaler's scrape format:
// protobuf metrics.Stat with Content-Type application/protobuf, on GET.
// Anything else gets a clear 4xx; a counter that cannot be read is a 500:
// the autoscaler then keeps its previous decision rather than seeing a
// made-up zero (not 503, which Knative's scraper takes for a service-mesh
// symptom and stops scraping pods directly).
func StatHandler(w StatSource) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			rw.Header().Set("Allow", "GET, HEAD")
			http.Error(rw, "the stat endpoint answers GET only", http.StatusMethodNotAllowed)
			return
		}
		st, err := w.Stat()
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		b, err := proto.Marshal(&st)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		rw.Header().Set("Content-Type", netheader.ProtobufMIMEType)
		rw.Write(b)
	})
}
