package eproxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spright-dev/spright/pkg/function"
)

// TopicHeader carries the message topic to and from an HTTP user container.
const TopicHeader = "X-Spright-Topic"

// Shim lets an unmodified HTTP user container be a chain member: the
// descriptor's payload is POSTed to the container, and its response body
// becomes the payload sent on. This costs the copies a zero-copy SDK
// function avoids (into the request, out of the response); everything else
// in the chain stays zero-copy. A response may set X-Spright-Topic to
// steer the next hop.
func Shim(userAddr string, timeout time.Duration) function.Handler {
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	url := "http://" + userAddr + "/"
	return function.HandlerFunc(func(m *function.Message) error {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(m.Payload()))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		if t := m.Topic(); t != "" {
			req.Header.Set(TopicHeader, t)
		}
		resp, err := client.Do(req)
		if err != nil {
			return function.Errorf(http.StatusBadGateway, "user container: %v", err)
		}
		defer resp.Body.Close()
		buf := m.Buffer()
		n, err := io.ReadFull(resp.Body, buf)
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
		case err != nil:
			return function.Errorf(http.StatusBadGateway, "user container: reading response: %v", err)
		default:
			var one [1]byte
			if k, _ := resp.Body.Read(one[:]); k > 0 {
				return function.Errorf(http.StatusBadGateway, "user container answered more than a slot (%d bytes)", len(buf))
			}
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return function.Errorf(resp.StatusCode, "user container: %s", bytes.TrimSpace(buf[:min(n, 512)]))
		}
		if t := resp.Header.Get(TopicHeader); t != "" {
			if err := m.SetTopic(t); err != nil {
				return function.Errorf(http.StatusBadGateway, "user container: %v", err)
			}
		}
		if err := m.SetLen(n); err != nil {
			return fmt.Errorf("shim: %w", err)
		}
		return nil
	})
}
