// Command testenv-etcd runs a single-member etcd on loopback for the testenv API server.
// It lives in its own module because k8s.io/kubernetes pins a newer etcd server than the
// 3.6 line testenv runs.
package main

import (
	"flag"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", ".testenv/etcd", "etcd data directory")
	clientURL := flag.String("listen-client", "http://127.0.0.1:12379", "client URL (loopback only)")
	peerURL := flag.String("listen-peer", "http://127.0.0.1:12380", "peer URL (loopback only)")
	flag.Parse()

	cu, err := url.Parse(*clientURL)
	if err != nil {
		log.Fatalf("client url: %v", err)
	}
	pu, err := url.Parse(*peerURL)
	if err != nil {
		log.Fatalf("peer url: %v", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = "testenv"
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "warn"
	// The cluster is disposable: trade durability for fewer fsync stalls on a shared disk.
	cfg.UnsafeNoFsync = true
	cfg.QuotaBackendBytes = 2 << 30

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		log.Printf("etcd ready on %s", cu)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		log.Fatal("etcd did not become ready within 60s")
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-e.Err():
		log.Fatalf("etcd: %v", err)
	case s := <-sig:
		log.Printf("etcd: %v, stopping", s)
	}
	// A graceful Close can wait on client connections for many seconds; the data is
	// disposable (wiped at every start), so give it a moment and then just exit.
	closed := make(chan struct{})
	go func() {
		e.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		log.Print("etcd: close timed out, exiting")
	}
}
