//go:build tools

// Package tools pins github.com/google/ko in this module's go.mod;
// hack/ko-resolve.sh builds it with `go build github.com/google/ko`.
package tools

import _ "github.com/google/ko"
