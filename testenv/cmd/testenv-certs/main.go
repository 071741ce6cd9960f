// Command testenv-certs writes the testenv PKI and kubeconfigs (see internal/pki).
package main

import (
	"flag"
	"log"
	"net"

	"example.invalid/shortener-operator/testenv/internal/pki"
)

func main() {
	var o pki.Options
	var svcIP string
	flag.StringVar(&o.Dir, "dir", ".testenv/pki", "output directory for keys and certificates")
	flag.StringVar(&o.KubeconfigDir, "kubeconfig-dir", ".testenv", "directory for the admin kubeconfig")
	flag.StringVar(&o.APIServerURL, "server", "https://127.0.0.1:16443", "API server URL")
	flag.StringVar(&svcIP, "service-ip", "127.96.0.1", "ClusterIP of the kubernetes Service")
	flag.StringVar(&o.NodeName, "node-name", "testenv", "node name")
	var nodeIP string
	flag.StringVar(&nodeIP, "node-ip", "", "the real node's IP (real-node mode), added to the API server and kubelet certificates")
	flag.Parse()
	if nodeIP != "" {
		if o.NodeIP = net.ParseIP(nodeIP); o.NodeIP == nil {
			log.Fatalf("invalid --node-ip %q", nodeIP)
		}
	}
	o.ServiceIP = net.ParseIP(svcIP)
	if o.ServiceIP == nil {
		log.Fatalf("invalid --service-ip %q", svcIP)
	}
	if err := pki.Generate(o); err != nil {
		log.Fatalf("testenv-certs: %v", err)
	}
}
