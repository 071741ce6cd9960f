// Package pki generates the testenv cluster's certificates and kubeconfigs. Everything is
// regenerated on every start: the cluster is disposable and a fresh CA avoids stale trust.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Options describe the addresses the certificates must cover.
type Options struct {
	Dir           string // .testenv/pki
	KubeconfigDir string // .testenv
	APIServerURL  string // https://127.0.0.1:16443
	ServiceIP     net.IP // first IP of the service range: the `kubernetes` Service
	NodeName      string
	// NodeIP, when set, is the real node's address (testenv's real-node mode): the API
	// server advertises itself there for pods, and the kubelet serves its API there.
	NodeIP net.IP
}

type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
	der  []byte
}

// Generate writes CA, serving and client certificates, the service-account key pair and
// one kubeconfig per component.
func Generate(o Options) error {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return err
	}
	ca, err := newCA()
	if err != nil {
		return err
	}
	if err := writePair(o.Dir, "ca", ca); err != nil {
		return err
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1"), o.ServiceIP}
	kubeletIPs := []net.IP{net.ParseIP("127.0.0.1")}
	if o.NodeIP != nil {
		loopback = append(loopback, o.NodeIP)
		kubeletIPs = append(kubeletIPs, o.NodeIP)
	}
	apiNames := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}

	type spec struct {
		file   string
		cn     string
		orgs   []string
		server bool
		ips    []net.IP
		dns    []string
	}
	specs := []spec{
		{file: "apiserver", cn: "kube-apiserver", server: true, ips: loopback, dns: apiNames},
		{file: "kubelet", cn: o.NodeName, server: true, ips: kubeletIPs, dns: []string{"localhost", o.NodeName}},
		// The API server authenticates to the kubelet endpoint with this certificate.
		{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{file: "admin", cn: "kubernetes-admin", orgs: []string{"system:masters"}},
		{file: "controller-manager", cn: "system:kube-controller-manager"},
		{file: "scheduler", cn: "system:kube-scheduler"},
		// The node agent acts as the kubelet, so it authenticates as the node and the Node
		// authorizer and NodeRestriction admission limit it as they would a real kubelet.
		{file: "node", cn: "system:node:" + o.NodeName, orgs: []string{"system:nodes"}},
		// kube-proxy of the real node: the built-in system:node-proxier role binds this user.
		{file: "kube-proxy", cn: "system:kube-proxy"},
	}
	pairs := map[string]*keyPair{}
	for _, s := range specs {
		kp, err := newLeaf(ca, s.cn, s.orgs, s.server, s.ips, s.dns)
		if err != nil {
			return fmt.Errorf("%s: %w", s.file, err)
		}
		if err := writePair(o.Dir, s.file, kp); err != nil {
			return err
		}
		pairs[s.file] = kp
	}

	// A separate CA for the aggregation layer's front proxy: without one, every component
	// logs errors about the missing requestheader CA, and nothing else may sign for it.
	fp, err := newCA()
	if err != nil {
		return err
	}
	if err := writePair(o.Dir, "front-proxy-ca", fp); err != nil {
		return err
	}
	fpc, err := newLeaf(fp, "front-proxy-client", nil, false, nil, nil)
	if err != nil {
		return err
	}
	if err := writePair(o.Dir, "front-proxy-client", fpc); err != nil {
		return err
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(o.Dir, "sa.key"), saKey); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return err
	}

	for file, user := range map[string]string{
		"kubeconfig":                    "admin",
		"controller-manager.kubeconfig": "controller-manager",
		"scheduler.kubeconfig":          "scheduler",
		"node.kubeconfig":               "node",
		"kube-proxy.kubeconfig":         "kube-proxy",
	} {
		dir := o.Dir
		if file == "kubeconfig" {
			dir = o.KubeconfigDir
		}
		kp := pairs[user]
		keyPEM, err := keyToPEM(kp.key)
		if err != nil {
			return err
		}
		kc := Kubeconfig(o.APIServerURL, certPEM(ca.der), "testenv-"+user, certPEM(kp.der), keyPEM, "", "")
		if err := os.WriteFile(filepath.Join(dir, file), []byte(kc), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Kubeconfig renders a single-context kubeconfig with embedded credentials: either a
// client certificate and key, or a bearer token file.
func Kubeconfig(server string, caPEM []byte, user string, clientCert, clientKey []byte, tokenFile, namespace string) string {
	ns := ""
	if namespace != "" {
		ns = "\n    namespace: " + namespace
	}
	b64 := base64.StdEncoding.EncodeToString
	auth := ""
	if tokenFile != "" {
		auth = "    tokenFile: " + tokenFile + "\n"
	} else {
		auth = "    client-certificate-data: " + b64(clientCert) + "\n    client-key-data: " + b64(clientKey) + "\n"
	}
	return "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: " + server +
		"\n    certificate-authority-data: " + b64(caPEM) +
		"\nusers:\n- name: " + user + "\n  user:\n" + auth +
		"contexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: " + user + ns +
		"\ncurrent-context: testenv\n"
}

func newCA() (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "testenv-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key, der: der}, nil
}

func newLeaf(ca *keyPair, cn string, orgs []string, server bool, ips []net.IP, dns []string) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if server {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key, der: der}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyToPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func writeKey(path string, k crypto.Signer) error {
	p, err := keyToPEM(k)
	if err != nil {
		return err
	}
	return os.WriteFile(path, p, 0o600)
}

func writePair(dir, name string, kp *keyPair) error {
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), certPEM(kp.der), 0o644); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, name+".key"), kp.key)
}
