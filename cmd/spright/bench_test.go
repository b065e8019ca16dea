package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestIsSourceTree(t *testing.T) {
	dir := t.TempDir()
	if isSourceTree(dir) {
		t.Fatal("empty directory taken for the source tree")
	}
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/other\n"), 0o644)
	if isSourceTree(dir) {
		t.Fatal("another module taken for the source tree")
	}
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("// c\nmodule "+modulePath+"\n\ngo 1.22\n"), 0o644)
	if !isSourceTree(dir) {
		t.Fatal("SPRIGHT's go.mod not recognised")
	}
}

func TestSourceTreeFromSubdirectory(t *testing.T) {
	// The test runs in cmd/spright of the module.
	root, err := sourceTree()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "test/bench/main.go")); err != nil {
		t.Fatalf("source tree %s has no test/bench: %v", root, err)
	}
}
