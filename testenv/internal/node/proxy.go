package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// Proxy does kube-proxy's job on loopback: for every TCP port of every Service with a
// ClusterIP it listens on clusterIP:port (the service range is itself loopback) and, for
// NodePorts, on 127.0.0.1:nodePort, forwarding each connection to the next ready
// endpoint in round-robin order. It binds nothing outside 127.0.0.0/8.
type Proxy struct {
	pods      corelisters.PodLister
	svcs      corelisters.ServiceLister
	file      string
	trigger   chan struct{}
	listeners map[string]*forwarder // by listen address
}

type forwarder struct {
	ln        net.Listener
	endpoints atomic.Pointer[[]string]
	next      atomic.Uint64
}

// NewProxy returns a proxy reading Services and Pods from the given listers and
// publishing its table to file.
func NewProxy(pods corelisters.PodLister, svcs corelisters.ServiceLister, file string) *Proxy {
	return &Proxy{pods: pods, svcs: svcs, file: file, trigger: make(chan struct{}, 1), listeners: map[string]*forwarder{}}
}

// Trigger asks for a resync; bursts of changes coalesce into one.
func (p *Proxy) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// Run resyncs on every trigger (and every few seconds, to retry failed binds).
func (p *Proxy) Run(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		p.sync()
		select {
		case <-ctx.Done():
			for _, f := range p.listeners {
				_ = f.ln.Close()
			}
			return
		case <-p.trigger:
		case <-t.C:
		}
	}
}

func (p *Proxy) sync() {
	svcs, err := p.svcs.List(labels.Everything())
	if err != nil {
		return
	}
	pods, err := p.pods.List(labels.Everything())
	if err != nil {
		return
	}
	entries := []*ServiceEntry{}
	want := map[string][]string{}
	for _, s := range svcs {
		e := ServiceEndpoints(s, pods)
		if e == nil {
			continue
		}
		entries = append(entries, e)
		for _, port := range e.Ports {
			addrs := make([]string, 0, len(port.Endpoints))
			for _, ep := range port.Endpoints {
				addrs = append(addrs, ep.Addr)
			}
			want[port.Listen] = addrs
			if port.NodePort != 0 {
				want["127.0.0.1:"+strconv.Itoa(int(port.NodePort))] = addrs
			}
		}
	}
	for addr, f := range p.listeners {
		if _, ok := want[addr]; !ok {
			_ = f.ln.Close()
			delete(p.listeners, addr)
		}
	}
	for addr, eps := range want {
		f := p.listeners[addr]
		if f == nil {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || !ap.Addr().IsLoopback() {
				continue
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				slog.Warn("service proxy cannot listen", "addr", addr, "err", err)
				continue
			}
			f = &forwarder{ln: ln}
			p.listeners[addr] = f
			go f.serve()
		}
		e := eps
		f.endpoints.Store(&e)
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].Namespace != entries[j].Namespace {
			return entries[i].Namespace < entries[j].Namespace
		}
		return entries[i].Name < entries[j].Name
	})
	p.publish(entries)
}

// publish writes the table atomically, so readers never see a half-written file.
func (p *Proxy) publish(entries []*ServiceEntry) {
	if p.file == "" {
		return
	}
	b, err := json.MarshalIndent(map[string]any{"services": entries}, "", "  ")
	if err != nil {
		return
	}
	tmp := p.file + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return
	}
	_ = os.Rename(tmp, p.file)
}

func (f *forwarder) serve() {
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go f.forward(conn)
	}
}

// pick returns the next endpoint in round-robin order.
func (f *forwarder) pick() (string, bool) {
	eps := f.endpoints.Load()
	if eps == nil || len(*eps) == 0 {
		return "", false
	}
	n := f.next.Add(1) - 1
	return (*eps)[n%uint64(len(*eps))], true
}

func (f *forwarder) forward(client net.Conn) {
	var backend net.Conn
	// Try each endpoint once: one that just stopped listening should not fail the client.
	eps := f.endpoints.Load()
	tries := 1
	if eps != nil && len(*eps) > 1 {
		tries = len(*eps)
	}
	for i := 0; i < tries; i++ {
		addr, ok := f.pick()
		if !ok {
			break
		}
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			backend = c
			break
		}
	}
	if backend == nil {
		// No ready endpoint: reset the connection, as kube-proxy's REJECT rule does.
		if tc, ok := client.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = client.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	go pipe(backend, client)
	go pipe(client, backend)
	wg.Wait()
	_ = client.Close()
	_ = backend.Close()
}
