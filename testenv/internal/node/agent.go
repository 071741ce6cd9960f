// Package node is testenv's simulated node: it registers a Node, runs the pods the
// scheduler binds to it as local processes on loopback addresses, reports their status
// like a kubelet, serves the kubelet log API and forwards Services like kube-proxy.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

// Config configures the agent.
type Config struct {
	NodeName     string
	NodeIP       string // 127.0.0.1
	KubeletPort  int32
	RepoRoot     string // relative image commands resolve here; pods run here
	StateDir     string // .testenv/node: pod dirs, pid files
	Images       *ImageTable
	APIServer    string // URL written into service-account kubeconfigs
	CAFile       string
	ServicesFile string
	Clock        clock.Clock
	CrashBackoff func() *Backoff
}

// Agent is the node.
type Agent struct {
	cfg      Config
	client   kubernetes.Interface
	ctx      context.Context
	ips      *IPAllocator
	refs     RefResolver
	recorder record.EventRecorder
	pidDir   string

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	wg      sync.WaitGroup

	proxy *Proxy
}

// New returns an agent; Run starts it.
func New(cfg Config, client kubernetes.Interface) *Agent {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.CrashBackoff == nil {
		cfg.CrashBackoff = NewCrashBackoff
	}
	return &Agent{
		cfg: cfg, client: client, ips: NewIPAllocator(), workers: map[types.UID]*podWorker{},
		refs: apiRefs{client}, pidDir: filepath.Join(cfg.StateDir, "pids"),
	}
}

// Run registers the node and serves until ctx ends, then stops every pod process.
func (a *Agent) Run(ctx context.Context) error {
	a.ctx = ctx
	if err := os.MkdirAll(a.pidDir, 0o755); err != nil {
		return err
	}
	bc := record.NewBroadcaster(record.WithContext(ctx))
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.client.CoreV1().Events("")})
	defer bc.Shutdown()
	a.recorder = bc.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: a.cfg.NodeName})

	if err := a.registerNode(ctx); err != nil {
		return fmt.Errorf("registering node: %w", err)
	}
	go a.heartbeat(ctx)

	podFactory := informers.NewSharedInformerFactoryWithOptions(a.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
	}))
	pods := podFactory.Core().V1().Pods()
	svcFactory := informers.NewSharedInformerFactory(a.client, 0)
	svcs := svcFactory.Core().V1().Services()
	a.proxy = NewProxy(pods.Lister(), svcs.Lister(), a.cfg.ServicesFile)

	_, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { a.onPod(ctx, o); a.proxy.Trigger() },
		UpdateFunc: func(_, o any) { a.onPod(ctx, o); a.proxy.Trigger() },
		DeleteFunc: func(o any) { a.onPodDelete(o); a.proxy.Trigger() },
	})
	if err != nil {
		return err
	}
	_, err = svcs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.proxy.Trigger() },
		UpdateFunc: func(_, _ any) { a.proxy.Trigger() },
		DeleteFunc: func(any) { a.proxy.Trigger() },
	})
	if err != nil {
		return err
	}
	podFactory.Start(ctx.Done())
	svcFactory.Start(ctx.Done())
	podFactory.WaitForCacheSync(ctx.Done())
	svcFactory.WaitForCacheSync(ctx.Done())
	go a.proxy.Run(ctx)

	<-ctx.Done()
	slog.Info("node agent stopping: killing pod processes")
	a.wg.Wait()
	return nil
}

func (a *Agent) onPod(ctx context.Context, o any) {
	pod, ok := o.(*corev1.Pod)
	if !ok || pod.Spec.NodeName != a.cfg.NodeName {
		return
	}
	a.mu.Lock()
	w := a.workers[pod.UID]
	if w == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			// A finished pod from before an agent restart has nothing left to run.
			a.mu.Unlock()
			return
		}
		w = newPodWorker(a, pod)
		a.workers[pod.UID] = w
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			w.run(ctx)
			a.mu.Lock()
			delete(a.workers, pod.UID)
			a.mu.Unlock()
		}()
	}
	a.mu.Unlock()
	w.update(pod)
}

func (a *Agent) onPodDelete(o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	w := a.workers[pod.UID]
	a.mu.Unlock()
	if w != nil {
		select {
		case <-w.stop:
		default:
			close(w.stop)
		}
	}
}

// workerFor finds the worker of a pod by namespace and name, for the log API.
func (a *Agent) workerFor(ns, name string) *podWorker {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.workers {
		w.mu.Lock()
		match := w.pod.Namespace == ns && w.pod.Name == name
		w.mu.Unlock()
		if match {
			return w
		}
	}
	return nil
}

func (a *Agent) event(pod *corev1.Pod, typ, reason, msg string) {
	if a.recorder != nil {
		a.recorder.Event(pod, typ, reason, msg)
	}
}

func (a *Agent) nodeObject() *corev1.Node {
	res := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("16"),
		corev1.ResourceMemory:           resource.MustParse("32Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: a.cfg.NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname":  a.cfg.NodeName,
				"kubernetes.io/os":        runtime.GOOS,
				"kubernetes.io/arch":      runtime.GOARCH,
				"beta.kubernetes.io/os":   runtime.GOOS,
				"beta.kubernetes.io/arch": runtime.GOARCH,
			},
		},
		Status: corev1.NodeStatus{
			Capacity:        res,
			Allocatable:     res,
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: a.cfg.NodeIP}, {Type: corev1.NodeHostName, Address: a.cfg.NodeName}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: a.cfg.KubeletPort}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: "testenv", SystemUUID: "testenv", BootID: fmt.Sprint(time.Now().Unix()),
				KernelVersion: "testenv", OSImage: "testenv (processes on loopback)", ContainerRuntimeVersion: "testenv://1",
				KubeletVersion: "v1.37.2", OperatingSystem: runtime.GOOS, Architecture: runtime.GOARCH,
			},
		},
	}
}

func (a *Agent) conditions(now metav1.Time, old []corev1.NodeCondition) []corev1.NodeCondition {
	want := []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"},
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
	}
	for i := range want {
		want[i].LastHeartbeatTime = now
		want[i].LastTransitionTime = now
		for _, o := range old {
			if o.Type == want[i].Type && o.Status == want[i].Status {
				want[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	return want
}

func (a *Agent) registerNode(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	want := a.nodeObject()
	now := metav1.NewTime(a.cfg.Clock.Now())
	n, err := nodes.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		n, err = nodes.Create(ctx, want, metav1.CreateOptions{})
		if err != nil {
			return err
		}
	case err != nil:
		return err
	}
	n.Status = want.Status
	n.Status.Conditions = a.conditions(now, n.Status.Conditions)
	_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node Lease every 10s and the Ready condition every 10s, so the
// node lifecycle controller neither taints the node nor evicts its pods.
func (a *Agent) heartbeat(ctx context.Context) {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		now := metav1.NewMicroTime(a.cfg.Clock.Now())
		l, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: corev1.NamespaceNodeLease},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity: ptr.To(a.cfg.NodeName), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now,
				},
			}
			if n, gerr := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{}); gerr == nil {
				l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
			}
			_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		} else if err == nil {
			l.Spec.RenewTime = &now
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			slog.Warn("renewing node lease", "err", err)
		}
		if n, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{}); err == nil {
			n.Status.Conditions = a.conditions(metav1.NewTime(a.cfg.Clock.Now()), n.Status.Conditions)
			if _, err := a.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
				slog.Warn("updating node status", "err", err)
			}
		} else if apierrors.IsNotFound(err) {
			if err := a.registerNode(ctx); err != nil {
				slog.Warn("re-registering node", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// apiRefs reads ConfigMap and Secret keys for env valueFrom straight from the API server
// (the Node authorizer allows it for pods bound to this node).
type apiRefs struct{ c kubernetes.Interface }

func (r apiRefs) ConfigMapKey(ns, name, key string) (string, bool, error) {
	cm, err := r.c.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	v, ok := cm.Data[key]
	return v, ok, nil
}

func (r apiRefs) SecretKey(ns, name, key string) (string, bool, error) {
	s, err := r.c.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	v, ok := s.Data[key]
	return string(v), ok, nil
}

func (r apiRefs) ConfigMapData(ns, name string) (map[string]string, bool, error) {
	cm, err := r.c.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return cm.Data, true, nil
}

func (r apiRefs) SecretData(ns, name string) (map[string]string, bool, error) {
	s, err := r.c.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, true, nil
}
