// Package e2e checks a running testenv cluster end to end: `make testenv-test` brings the
// cluster up and runs these with TESTENV_E2E=1 (and TESTENV_E2E_DOWN=1 for the last check,
// which stops the cluster).
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

var (
	root    = mustAbs("../..")
	runDir  = filepath.Join(root, ".testenv")
	kubectl = filepath.Join(root, "testenv/bin/kubectl")
)

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		panic(err)
	}
	return a
}

func setup(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	if os.Getenv("TESTENV_E2E") != "1" {
		t.Skip("set TESTENV_E2E=1 with a running cluster (make testenv-test)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(runDir, "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("e2e-%d", time.Now().UnixNano()%1_000_000)
	ctx := context.Background()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	return c, ns
}

// eventually polls cond every 200ms until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
}

func shortenerContainer(env ...corev1.EnvVar) corev1.Container {
	// These tests exercise the node, not the API: the shortener's writes need no token here
	// (without a token or this opt-out it would refuse to start).
	env = append(env, corev1.EnvVar{Name: "SHORTENER_ALLOW_ANONYMOUS_WRITES", Value: "true"})
	return corev1.Container{
		Name:  "shortener",
		Image: "shortener:e2e",
		Env:   env,
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
			PeriodSeconds: 1, FailureThreshold: 1,
		},
	}
}

func storeEnv(t *testing.T) corev1.EnvVar {
	return corev1.EnvVar{Name: "SHORTENER_STORE", Value: filepath.Join(t.TempDir(), "e2e.db")}
}

func podsOf(t *testing.T, c kubernetes.Interface, ns, selector string) []corev1.Pod {
	t.Helper()
	l, err := c.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

type servicesFile struct {
	Services []struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		Ports     []struct {
			Address   string `json:"address"`
			Endpoints []struct {
				Pod  string `json:"pod"`
				Addr string `json:"addr"`
			} `json:"endpoints"`
		} `json:"ports"`
	} `json:"services"`
}

// endpointPods reads the service proxy's published table: the pods it forwards to.
func endpointPods(ns, name string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(runDir, "services.json"))
	if err != nil {
		return nil, err
	}
	var f servicesFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	for _, s := range f.Services {
		if s.Namespace == ns && s.Name == name && len(s.Ports) > 0 {
			var pods []string
			for _, e := range s.Ports[0].Endpoints {
				pods = append(pods, e.Pod)
			}
			return pods, nil
		}
	}
	return nil, fmt.Errorf("service %s/%s not in services.json", ns, name)
}

func createService(t *testing.T, c kubernetes.Interface, ns, name string, sel map[string]string) *corev1.Service {
	t.Helper()
	svc, err := c.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err != nil || !ip.IsLoopback() {
		t.Fatalf("ClusterIP %q is not a loopback address", svc.Spec.ClusterIP)
	}
	return svc
}

func TestShortenerDeployment(t *testing.T) {
	c, ns := setup(t)
	ctx := context.Background()
	labels := map[string]string{"app": "shortener"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "shortener"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{shortenerContainer(storeEnv(t))}},
			},
		},
	}
	if _, err := c.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := createService(t, c, ns, "shortener", labels)

	eventually(t, 90*time.Second, "deployment Available with 3 ready replicas", func() error {
		d, err := c.AppsV1().Deployments(ns).Get(ctx, "shortener", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range d.Status.Conditions {
			if cond.Type == appsv1.DeploymentAvailable && cond.Status == corev1.ConditionTrue && d.Status.ReadyReplicas == 3 {
				return nil
			}
		}
		return fmt.Errorf("status %+v", d.Status)
	})

	pods := podsOf(t, c, ns, "app=shortener")
	ips := map[string]bool{}
	for _, p := range pods {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !ip.IsLoopback() || p.Status.PodIP == "127.0.0.1" {
			t.Fatalf("pod %s has IP %q, want a loopback address other than 127.0.0.1", p.Name, p.Status.PodIP)
		}
		if !ready(&p) || p.Status.HostIP != "127.0.0.1" || len(p.Status.PodIPs) != 1 {
			t.Fatalf("pod %s status %+v", p.Name, p.Status)
		}
		ips[p.Status.PodIP] = true
	}
	if len(pods) != 3 || len(ips) != 3 {
		t.Fatalf("want 3 pods on distinct IPs, got %d pods, IPs %v", len(pods), ips)
	}

	t.Run("service forwards to every ready pod", func(t *testing.T) {
		eventually(t, 10*time.Second, "3 endpoints in services.json", func() error {
			eps, err := endpointPods(ns, "shortener")
			if err == nil && len(eps) != 3 {
				err = fmt.Errorf("endpoints %v", eps)
			}
			return err
		})
		url := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, "80") + "/healthz"
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for i := 0; i < 30; i++ {
			resp, err := client.Get(url)
			if err != nil {
				t.Fatalf("request %d through the service: %v", i, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: status %d", i, resp.StatusCode)
			}
		}
		// Round-robin spreads the requests: each pod's own metrics count some /healthz hits.
		for _, p := range pods {
			resp, err := client.Get("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(b), `route="/healthz"`) {
				t.Errorf("pod %s received no /healthz request through the service", p.Name)
			}
		}
	})

	t.Run("kubectl logs returns the shortener's output", func(t *testing.T) {
		out, err := exec.Command(kubectl, "--kubeconfig", filepath.Join(runDir, "kubeconfig"), "logs", "-n", ns, pods[0].Name).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) == 0 {
			t.Fatalf("kubectl logs: %v: %q", err, out)
		}
		tail, err := exec.Command(kubectl, "--kubeconfig", filepath.Join(runDir, "kubeconfig"), "logs", "-n", ns, pods[0].Name, "--tail=1", "--timestamps").CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(tail)), "\n")
		if err != nil || len(lines) != 1 {
			t.Fatalf("kubectl logs --tail=1: %v: %q", err, tail)
		}
		if _, perr := time.Parse(time.RFC3339Nano, strings.Fields(lines[0])[0]); perr != nil {
			t.Fatalf("--timestamps line %q: %v", lines[0], perr)
		}
	})

	t.Run("a deleted pod is replaced", func(t *testing.T) {
		victim := pods[0]
		if err := c.CoreV1().Pods(ns).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "3 ready pods without the deleted one", func() error {
			n := 0
			for _, p := range podsOf(t, c, ns, "app=shortener") {
				if p.Name == victim.Name {
					return fmt.Errorf("%s still exists", victim.Name)
				}
				if ready(&p) {
					n++
				}
			}
			if n != 3 {
				return fmt.Errorf("%d ready", n)
			}
			return nil
		})
		eventually(t, 5*time.Second, "endpoints without the deleted pod", func() error {
			eps, err := endpointPods(ns, "shortener")
			if err != nil {
				return err
			}
			for _, e := range eps {
				if e == victim.Name {
					return fmt.Errorf("endpoints still hold %s", victim.Name)
				}
			}
			if len(eps) != 3 {
				return fmt.Errorf("endpoints %v", eps)
			}
			return nil
		})
	})
}

func waitingReason(p *corev1.Pod) (string, int32, *corev1.ContainerStateTerminated) {
	if len(p.Status.ContainerStatuses) == 0 {
		return "", 0, nil
	}
	cs := p.Status.ContainerStatuses[0]
	reason := ""
	if cs.State.Waiting != nil {
		reason = cs.State.Waiting.Reason
	}
	return reason, cs.RestartCount, cs.LastTerminationState.Terminated
}

func TestUnmappedImage(t *testing.T) {
	c, ns := setup(t)
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "nginx", Image: "nginx:1.27"}}},
	}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	eventually(t, 60*time.Second, "ErrImagePull then ImagePullBackOff", func() error {
		p, err := c.CoreV1().Pods(ns).Get(ctx, "nginx", metav1.GetOptions{})
		if err != nil {
			return err
		}
		r, _, _ := waitingReason(p)
		seen[r] = true
		if p.Status.Phase != corev1.PodPending {
			return fmt.Errorf("phase %s, want Pending", p.Status.Phase)
		}
		// The failed attempt shows as ErrImagePull for a moment, the wait after it as
		// ImagePullBackOff; attempts repeat (10s, 20s, ...), so both are observable.
		if !seen["ErrImagePull"] || !seen["ImagePullBackOff"] {
			return fmt.Errorf("reasons seen %v", seen)
		}
		return nil
	})
}

func TestCrashLoopBackOff(t *testing.T) {
	c, ns := setup(t)
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crasher"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "shortener:e2e",
			Command: []string{"sh", "-c", "echo crashing on $(POD_IP); exit 3"},
		}}},
	}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var firstRestarts int32
	eventually(t, 60*time.Second, "CrashLoopBackOff", func() error {
		p, err := c.CoreV1().Pods(ns).Get(ctx, "crasher", metav1.GetOptions{})
		if err != nil {
			return err
		}
		r, n, last := waitingReason(p)
		if r != "CrashLoopBackOff" || last == nil || last.ExitCode != 3 {
			return fmt.Errorf("reason %q restarts %d last %+v", r, n, last)
		}
		firstRestarts = n
		return nil
	})
	eventually(t, 60*time.Second, "restartCount to grow", func() error {
		p, err := c.CoreV1().Pods(ns).Get(ctx, "crasher", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if _, n, _ := waitingReason(p); n <= firstRestarts {
			return fmt.Errorf("restartCount still %d", n)
		}
		return nil
	})
	out, err := exec.Command(kubectl, "--kubeconfig", filepath.Join(runDir, "kubeconfig"), "logs", "-n", ns, "crasher", "--previous").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "crashing on 127.0.") {
		t.Fatalf("kubectl logs --previous: %v: %q", err, out)
	}
}

func TestReadinessProbeFailureLeavesEndpoints(t *testing.T) {
	c, ns := setup(t)
	ctx := context.Background()
	flag := filepath.Join(t.TempDir(), "ready")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "flaky"}
	ctr := shortenerContainer(storeEnv(t))
	ctr.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", flag}}},
		PeriodSeconds: 1, FailureThreshold: 1,
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "flaky", Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{ctr}}}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createService(t, c, ns, "flaky", labels)
	eventually(t, 60*time.Second, "pod ready and in the endpoints", func() error {
		eps, err := endpointPods(ns, "flaky")
		if err == nil && len(eps) != 1 {
			err = fmt.Errorf("endpoints %v", eps)
		}
		return err
	})
	readyAt := time.Now()
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "pod NotReady", func() error {
		p, err := c.CoreV1().Pods(ns).Get(ctx, "flaky", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ready(p) {
			return fmt.Errorf("still ready")
		}
		if p.Status.ContainerStatuses[0].State.Running == nil {
			return fmt.Errorf("a readiness failure must not stop the container")
		}
		return nil
	})
	eventually(t, 5*time.Second, "endpoints emptied", func() error {
		eps, err := endpointPods(ns, "flaky")
		if err == nil && len(eps) != 0 {
			err = fmt.Errorf("endpoints %v", eps)
		}
		return err
	})
	t.Logf("unready and out of the endpoints %v after the probe started failing", time.Since(readyAt).Round(100*time.Millisecond))
}

func TestServiceAccountKubeconfig(t *testing.T) {
	c, ns := setup(t)
	ctx := context.Background()
	// The pod's own kubeconfig authenticates it as its service account; the default
	// account has no RBAC grants, so listing pods must be forbidden.
	script := kubectl + ` auth whoami -o jsonpath='{.status.userInfo.username}{"\n"}'; ` +
		kubectl + ` get pods 2>&1; test -f "$KUBECONFIG"`
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "whoami"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{
			Name: "app", Image: "shortener:e2e", Command: []string{"sh", "-c", script},
		}}},
	}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "whoami pod Succeeded", func() error {
		p, err := c.CoreV1().Pods(ns).Get(ctx, "whoami", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodSucceeded {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	out, err := exec.Command(kubectl, "--kubeconfig", filepath.Join(runDir, "kubeconfig"), "logs", "-n", ns, "whoami").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl logs: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "system:serviceaccount:"+ns+":default\n") {
		t.Errorf("pod did not authenticate as its service account:\n%s", out)
	}
	if !strings.Contains(string(out), "Forbidden") || !strings.Contains(string(out), `in the namespace "`+ns+`"`) {
		t.Errorf("RBAC must deny the default service account, in the pod's namespace:\n%s", out)
	}
}

func alivePids(t *testing.T) []int {
	var pids []int
	files, _ := filepath.Glob(filepath.Join(runDir, "pids", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pids = append(pids, pid)
		}
	}
	pgs, _ := filepath.Glob(filepath.Join(runDir, "node", "pids", "*"))
	for _, f := range pgs {
		if pid, err := strconv.Atoi(filepath.Base(f)); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestClusterDown must stay the last test in this file (go test runs them in source order;
// TESTENV_E2E_DOWN=1): it stops the cluster with a pod running
// and checks that no component or pod process survives.
func TestClusterDown(t *testing.T) {
	if os.Getenv("TESTENV_E2E_DOWN") != "1" {
		t.Skip("set TESTENV_E2E_DOWN=1 to stop the cluster at the end")
	}
	c, ns := setup(t)
	ctx := context.Background()
	// The cluster is shared by everyone working in this checkout: if someone else's
	// namespace is there, stopping the cluster would break their run.
	nss, err := c.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nss.Items {
		if n.Name != ns && n.Name != "default" && !strings.HasPrefix(n.Name, "kube-") && n.Status.Phase == corev1.NamespaceActive {
			t.Skipf("namespace %s belongs to another user of the cluster; not stopping it", n.Name)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sleeper"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "app", Image: "shortener:e2e", Command: []string{"sh", "-c", "sleep 1000 & sleep 1000"},
	}}}}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "sleeper running", func() error {
		p, err := c.CoreV1().Pods(ns).Get(ctx, "sleeper", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	pids := alivePids(t)
	if len(pids) < 6 {
		t.Fatalf("expected 5 components and a pod process group, found pids %v", pids)
	}
	out, err := exec.Command("bash", filepath.Join(root, "scripts/testenv-down.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("cluster-down: %v: %s", err, out)
	}
	for _, pid := range pids {
		// Signal 0 on the group catches a pod's background children too.
		if syscall.Kill(-pid, 0) == nil || syscall.Kill(pid, 0) == nil {
			t.Errorf("process (group) %d survived cluster-down", pid)
		}
	}
	out, err = exec.Command("bash", filepath.Join(root, "scripts/testenv-down.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("a second cluster-down must succeed too: %v: %s", err, out)
	}
}
