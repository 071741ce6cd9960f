package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"example.invalid/shortener-operator/testenv/internal/pki"
)

// saNeeded reports whether the pod has a service-account token volume, which the
// ServiceAccount admission plugin adds exactly when the token is automounted.
func (w *podWorker) saNeeded() bool {
	for _, v := range w.pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil {
				return true
			}
		}
	}
	return false
}

// writeServiceAccount requests a pod-bound token (TokenRequest) and writes it with a
// kubeconfig that reads it from a file, so the refreshed token is picked up by clients
// without a restart. The context's namespace is the pod's, as in-cluster config would have it.
func (w *podWorker) writeServiceAccount(ctx context.Context, now time.Time) error {
	pod := w.pod
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	const lifetime = 3600
	tr, err := w.a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](lifetime),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("requesting token for service account %s/%s: %w", pod.Namespace, sa, err)
	}
	dir := filepath.Join(w.dir, "serviceaccount")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca, err := os.ReadFile(w.a.cfg.CAFile)
	if err != nil {
		return err
	}
	tokenPath := filepath.Join(dir, "token")
	files := map[string][]byte{
		"ca.crt":     ca,
		"namespace":  []byte(pod.Namespace),
		"token":      []byte(tr.Status.Token),
		"kubeconfig": []byte(pki.Kubeconfig(w.a.cfg.APIServer, ca, "system:serviceaccount:"+pod.Namespace+":"+sa, nil, nil, tokenPath, pod.Namespace)),
	}
	for name, b := range files {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	w.saDir = dir
	// Refresh at 80% of the lifetime, as the kubelet does.
	w.tokenExpiry = now.Add(lifetime * 8 / 10 * time.Second)
	return nil
}
