package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ServeKubeletAPI serves the kubelet's log endpoint over HTTPS, accepting only clients
// with certificates from the cluster CA (the API server's kubelet-client certificate),
// so `kubectl logs` works through the API server.
func (a *Agent) ServeKubeletAPI(ctx context.Context, addr, certFile, keyFile, caFile string) error {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("no CA certificate in " + caFile)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", a.handleLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	srv := &http.Server{
		Addr:              addr,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	err = srv.ListenAndServeTLS(certFile, keyFile)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// LogOptions are the query parameters the API server passes for `kubectl logs`.
type LogOptions struct {
	Previous   bool
	Follow     bool
	Timestamps bool
	TailLines  int64 // -1: all
	LimitBytes int64 // 0: unlimited
	SinceTime  time.Time
}

func parseLogOptions(q map[string][]string) (LogOptions, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	o := LogOptions{TailLines: -1}
	o.Previous = get("previous") == "true"
	o.Follow = get("follow") == "true"
	o.Timestamps = get("timestamps") == "true"
	if v := get("tailLines"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return o, fmt.Errorf("invalid tailLines %q", v)
		}
		o.TailLines = n
	}
	if v := get("limitBytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("invalid limitBytes %q", v)
		}
		o.LimitBytes = n
	}
	if v := get("sinceSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("invalid sinceSeconds %q", v)
		}
		o.SinceTime = time.Now().Add(-time.Duration(n) * time.Second)
	}
	if v := get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return o, fmt.Errorf("invalid sinceTime %q", v)
		}
		o.SinceTime = t
	}
	return o, nil
}

func (a *Agent) handleLogs(w http.ResponseWriter, r *http.Request) {
	ns, podName, cname := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	opts, err := parseLogOptions(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pw := a.workerFor(ns, podName)
	if pw == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", ns, podName, a.cfg.NodeName), http.StatusNotFound)
		return
	}
	var c *container
	pw.mu.Lock()
	for _, cc := range pw.ctrs {
		if cc.spec.Name == cname {
			c = cc
		}
	}
	pw.mu.Unlock()
	if c == nil {
		http.Error(w, fmt.Sprintf("container %s is not valid for pod %s", cname, podName), http.StatusNotFound)
		return
	}
	file := "current.log"
	if opts.Previous {
		file = "previous.log"
	}
	path := filepath.Join(c.dir, file)
	f, err := os.Open(path)
	if err != nil {
		msg := fmt.Sprintf("container %q in pod %q is waiting to start", cname, podName)
		if opts.Previous {
			msg = fmt.Sprintf("previous terminated container %q in pod %q not found", cname, podName)
		}
		http.Error(w, msg, http.StatusBadRequest)
		return
	}
	defer f.Close()
	inst := c.liveInstance.Load()
	w.Header().Set("Content-Type", "text/plain")
	out := &limitWriter{w: w, left: opts.LimitBytes}
	flush := func() {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	if err := writeLogTail(f, out, opts); err != nil {
		return
	}
	flush()
	if !opts.Follow || opts.Previous {
		return
	}
	// Follow until the client goes away or the container instance being followed ends.
	br := bufio.NewReader(f)
	var partial string
	for {
		line, err := br.ReadString('\n')
		if err == nil {
			if werr := writeLogLine(out, partial+line, opts); werr != nil {
				return
			}
			partial = ""
			flush()
			continue
		}
		partial += line
		if inst == 0 || c.liveInstance.Load() != inst {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type limitWriter struct {
	w    io.Writer
	left int64 // 0: unlimited
	used int64
}

var errLimit = errors.New("log byte limit reached")

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left > 0 {
		if l.used >= l.left {
			return 0, errLimit
		}
		if int64(len(p)) > l.left-l.used {
			p = p[:l.left-l.used]
		}
	}
	n, err := l.w.Write(p)
	l.used += int64(n)
	return n, err
}

// writeLogTail writes the stored lines of f honouring tailLines and sinceTime, leaving f
// positioned at the end of what it consumed (for follow).
func writeLogTail(f *os.File, w io.Writer, o LogOptions) error {
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	text := string(b)
	// An unterminated last line is still being written; follow picks it up.
	if i := strings.LastIndexByte(text, '\n'); i < len(text)-1 {
		if _, err := f.Seek(int64(i+1-len(text)), io.SeekCurrent); err != nil {
			return err
		}
		text = text[:i+1]
	}
	lines := strings.SplitAfter(text, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if o.TailLines >= 0 && int64(len(lines)) > o.TailLines {
		lines = lines[int64(len(lines))-o.TailLines:]
	}
	for _, l := range lines {
		if err := writeLogLine(w, l, o); err != nil {
			return err
		}
	}
	return nil
}

func writeLogLine(w io.Writer, line string, o LogOptions) error {
	ts, _, text, ok := parseLogLine(strings.TrimSuffix(line, "\n"))
	if ok && !o.SinceTime.IsZero() && ts.Before(o.SinceTime) {
		return nil
	}
	if o.Timestamps && ok {
		text = ts.Format(time.RFC3339Nano) + " " + text
	}
	_, err := io.WriteString(w, text+"\n")
	return err
}
