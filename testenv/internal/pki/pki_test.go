package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: filepath.Join(dir, "pki"), KubeconfigDir: dir, APIServerURL: "https://127.0.0.1:16443", ServiceIP: net.ParseIP("127.96.0.1"), NodeName: "testenv"}
	if err := Generate(o); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(o.Dir, "ca.crt")))

	api := readCert(t, filepath.Join(o.Dir, "apiserver.crt"))
	for _, host := range []string{"127.0.0.1", "127.96.0.1", "localhost", "kubernetes.default.svc"} {
		if _, err := api.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("apiserver certificate for %s: %v", host, err)
		}
	}
	if _, err := readCert(t, filepath.Join(o.Dir, "kubelet.crt")).Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("kubelet serving certificate: %v", err)
	}
	for file, want := range map[string][2]string{
		"admin.crt":                    {"kubernetes-admin", "system:masters"},
		"node.crt":                     {"system:node:testenv", "system:nodes"},
		"apiserver-kubelet-client.crt": {"kube-apiserver-kubelet-client", "system:masters"},
		"controller-manager.crt":       {"system:kube-controller-manager", ""},
	} {
		c := readCert(t, filepath.Join(o.Dir, file))
		org := strings.Join(c.Subject.Organization, ",")
		if c.Subject.CommonName != want[0] || org != want[1] {
			t.Errorf("%s: CN=%s O=%s, want CN=%s O=%s", file, c.Subject.CommonName, org, want[0], want[1])
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s as client certificate: %v", file, err)
		}
	}
	kc, err := os.ReadFile(filepath.Join(dir, "kubeconfig"))
	if err != nil || !strings.Contains(string(kc), "server: https://127.0.0.1:16443") || !strings.Contains(string(kc), "client-key-data:") {
		t.Fatalf("admin kubeconfig: %v\n%s", err, kc)
	}
	for _, f := range []string{"sa.key", "sa.pub", "node.kubeconfig", "scheduler.kubeconfig", "controller-manager.kubeconfig"} {
		if _, err := os.Stat(filepath.Join(o.Dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestTokenKubeconfig(t *testing.T) {
	kc := Kubeconfig("https://127.0.0.1:16443", []byte("ca"), "system:serviceaccount:ns:sa", nil, nil, "/tmp/token", "ns")
	for _, want := range []string{"tokenFile: /tmp/token", "namespace: ns", "user: system:serviceaccount:ns:sa"} {
		if !strings.Contains(kc, want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, kc)
		}
	}
	if strings.Contains(kc, "client-certificate-data") {
		t.Error("a token kubeconfig carries no client certificate")
	}
}
