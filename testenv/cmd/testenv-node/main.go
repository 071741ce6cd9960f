// Command testenv-node is the testenv cluster's node: see internal/node.
package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"example.invalid/shortener-operator/testenv/internal/node"
)

func main() {
	var cfg node.Config
	var kubeconfig, images, certFile, keyFile string
	var port int
	flag.StringVar(&kubeconfig, "kubeconfig", ".testenv/pki/node.kubeconfig", "node credentials")
	flag.StringVar(&cfg.NodeName, "node-name", "testenv", "node name")
	flag.StringVar(&cfg.RepoRoot, "repo-root", ".", "repository root: image commands and pods run relative to it")
	flag.StringVar(&cfg.StateDir, "state-dir", ".testenv/node", "pod directories, logs and pid files")
	flag.StringVar(&images, "images", "testenv/images.yaml", "image table")
	flag.StringVar(&cfg.APIServer, "apiserver", "https://127.0.0.1:16443", "API server URL for service-account kubeconfigs")
	flag.StringVar(&cfg.CAFile, "ca", ".testenv/pki/ca.crt", "cluster CA")
	flag.StringVar(&certFile, "tls-cert", ".testenv/pki/kubelet.crt", "kubelet serving certificate")
	flag.StringVar(&keyFile, "tls-key", ".testenv/pki/kubelet.key", "kubelet serving key")
	flag.IntVar(&port, "port", 16250, "kubelet API port on 127.0.0.1")
	flag.StringVar(&cfg.ServicesFile, "services-file", ".testenv/services.json", "where the service proxy publishes its table")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))

	cfg.NodeIP = "127.0.0.1"
	cfg.KubeletPort = int32(port)
	tbl, err := node.LoadImageTable(images)
	if err != nil {
		slog.Error("loading image table", "err", err)
		os.Exit(1)
	}
	cfg.Images = tbl
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		slog.Error("loading kubeconfig", "err", err)
		os.Exit(1)
	}
	rc.QPS, rc.Burst = 50, 100
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		slog.Error("building client", "err", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a := node.New(cfg, client)
	go func() {
		addr := net.JoinHostPort(cfg.NodeIP, strconv.Itoa(port))
		if err := a.ServeKubeletAPI(ctx, addr, certFile, keyFile, cfg.CAFile); err != nil {
			slog.Error("kubelet API server", "err", err)
			os.Exit(1)
		}
	}()
	if err := a.Run(ctx); err != nil {
		slog.Error("node agent", "err", err)
		os.Exit(1)
	}
}
