package node

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeLog(t *testing.T, lines ...string) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "current.log")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b strings.Builder
	for i, l := range lines {
		b.WriteString(logLine(base.Add(time.Duration(i)*time.Second), "stdout", l) + "\n")
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestLogTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		q    map[string][]string
		want string
	}{
		{"all", nil, "a\nb b\nc\n"},
		{"tail", map[string][]string{"tailLines": {"2"}}, "b b\nc\n"},
		{"tail zero", map[string][]string{"tailLines": {"0"}}, ""},
		{"timestamps", map[string][]string{"tailLines": {"1"}, "timestamps": {"true"}}, "2026-01-01T00:00:02Z c\n"},
		{"since", map[string][]string{"sinceTime": {"2026-01-01T00:00:01Z"}}, "b b\nc\n"},
	} {
		o, err := parseLogOptions(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := writeLogTail(writeLog(t, "a", "b b", "c"), &out, o); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, out.String(), tc.want)
		}
	}
	if _, err := parseLogOptions(map[string][]string{"tailLines": {"-1"}}); err == nil {
		t.Error("negative tailLines must be rejected")
	}
	lw := &limitWriter{w: io.Discard, left: 3}
	if n, _ := lw.Write([]byte("hello")); n != 3 {
		t.Errorf("limitBytes=3 wrote %d", n)
	}
	if _, err := lw.Write([]byte("x")); err == nil {
		t.Error("writes past limitBytes must fail")
	}
}

// backend accepts connections on a fresh loopback port and answers each with its name.
func backend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, name+"\n")
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestForwarderRoundRobinAndReject(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln}
	defer ln.Close()
	go f.serve()
	ask := func() (string, error) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return "", err
		}
		defer c.Close()
		return bufio.NewReader(c).ReadString('\n')
	}

	if _, err := ask(); err == nil {
		t.Fatal("with no endpoints a connection must be closed without data")
	}
	eps := []string{backend(t, "a"), backend(t, "b")}
	f.endpoints.Store(&eps)
	got := map[string]int{}
	for i := 0; i < 6; i++ {
		s, err := ask()
		if err != nil {
			t.Fatal(err)
		}
		got[strings.TrimSpace(s)]++
	}
	if got["a"] != 3 || got["b"] != 3 {
		t.Fatalf("round-robin over two endpoints gave %v", got)
	}
	// An endpoint that stopped listening is skipped rather than failing the client.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	eps2 := []string{deadAddr, eps[0]}
	f.endpoints.Store(&eps2)
	for i := 0; i < 4; i++ {
		if s, err := ask(); err != nil || strings.TrimSpace(s) != "a" {
			t.Fatalf("request %d: %q %v", i, s, err)
		}
	}
}
