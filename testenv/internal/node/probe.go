package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ProbeKind names the three container probes.
type ProbeKind string

const (
	Startup   ProbeKind = "startup"
	Readiness ProbeKind = "readiness"
	Liveness  ProbeKind = "liveness"
)

// ProbeTracker applies a probe's success and failure thresholds to individual results,
// as the kubelet's prober workers do.
type ProbeTracker struct {
	SuccessThreshold int32
	FailureThreshold int32

	ok        bool
	successes int32
	failures  int32
}

// NewProbeTracker starts in the kubelet's initial result for the kind: liveness is assumed
// healthy until proven otherwise, readiness and startup are not yet passed.
func NewProbeTracker(kind ProbeKind, p *corev1.Probe) *ProbeTracker {
	t := &ProbeTracker{SuccessThreshold: p.SuccessThreshold, FailureThreshold: p.FailureThreshold}
	if t.SuccessThreshold < 1 {
		t.SuccessThreshold = 1
	}
	if t.FailureThreshold < 1 {
		t.FailureThreshold = 3
	}
	t.ok = kind == Liveness
	return t
}

// Observe records one probe outcome and returns the (possibly unchanged) result.
func (t *ProbeTracker) Observe(success bool) bool {
	if success {
		t.failures = 0
		t.successes++
		if t.successes >= t.SuccessThreshold {
			t.ok = true
		}
	} else {
		t.successes = 0
		t.failures++
		if t.failures >= t.FailureThreshold {
			t.ok = false
		}
	}
	return t.ok
}

// OK is the current result.
func (t *ProbeTracker) OK() bool { return t.ok }

// Failures is the count of consecutive failures.
func (t *ProbeTracker) Failures() int32 { return t.failures }

// ProbeTiming holds a probe's schedule with the API defaults applied.
type ProbeTiming struct {
	InitialDelay time.Duration
	Period       time.Duration
	Timeout      time.Duration
}

// TimingOf applies the API server's defaults (period 10s, timeout 1s) for probes that
// come without them.
func TimingOf(p *corev1.Probe) ProbeTiming {
	t := ProbeTiming{
		InitialDelay: time.Duration(p.InitialDelaySeconds) * time.Second,
		Period:       time.Duration(p.PeriodSeconds) * time.Second,
		Timeout:      time.Duration(p.TimeoutSeconds) * time.Second,
	}
	if t.Period <= 0 {
		t.Period = 10 * time.Second
	}
	if t.Timeout <= 0 {
		t.Timeout = time.Second
	}
	return t
}

// resolvePort turns a named or numbered probe port into a number using the container's ports.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("port %q not found in container ports", p.StrVal)
}

// RunProbe performs one probe against a container listening on podIP.
func RunProbe(ctx context.Context, p *corev1.Probe, c *corev1.Container, podIP string, env []string, dir string) error {
	t := TimingOf(p)
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		return probeHTTP(ctx, p.HTTPGet, c, podIP)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = podIP
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.Exec != nil:
		if len(p.Exec.Command) == 0 {
			return fmt.Errorf("exec probe without command")
		}
		cmd := exec.CommandContext(ctx, p.Exec.Command[0], p.Exec.Command[1:]...)
		cmd.Env = env
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("exec probe: %w: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	case p.GRPC != nil:
		return fmt.Errorf("grpc probes are not supported by testenv")
	}
	return fmt.Errorf("probe has no handler")
}

func probeHTTP(ctx context.Context, h *corev1.HTTPGetAction, c *corev1.Container, podIP string) error {
	port, err := resolvePort(h.Port, c)
	if err != nil {
		return err
	}
	host := h.Host
	if host == "" {
		host = podIP
	}
	scheme := "http"
	if h.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	path := h.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	for _, hd := range h.HTTPHeaders {
		if strings.EqualFold(hd.Name, "host") {
			req.Host = hd.Value
			continue
		}
		req.Header.Add(hd.Name, hd.Value)
	}
	client := &http.Client{
		// The kubelet does not verify probe certificates and does not follow redirects off-host.
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}
