package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/internal/sidecar"
)

// probeClient checks, from inside a system's namespace, that it answers
// right: wrk only counts status codes.
type probeClient struct {
	http     *http.Client
	behavior string
	bodies   [][]byte
}

func newProbeClient(ns *sidecar.NetNS, e *env) *probeClient {
	c := &probeClient{http: ns.HTTPClient(10 * time.Second), behavior: e.opts.behavior}
	for _, p := range e.opts.mix {
		c.bodies = append(c.bodies, []byte(benchutil.MixBody(p.Size)))
	}
	return c
}

// check POSTs each body of the mix and compares the answer with what the
// function computes.
func (c *probeClient) check(ctx context.Context, url string) error {
	for _, body := range c.bodies {
		want, _ := expectFor(c.behavior, body)
		status, got, err := sidecar.Do(ctx, c.http, http.MethodPost, url, http.Header{"Content-Type": {"application/octet-stream"}}, body)
		if err != nil {
			return fmt.Errorf("POST %d bytes: %w", len(body), err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("POST %d bytes: %d with %d bytes %.40q..., want %d bytes %.40q...", len(body), status, len(got), got, len(want), want)
		}
	}
	return nil
}
