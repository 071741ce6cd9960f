package node

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestSplitImage(t *testing.T) {
	for _, tc := range []struct{ image, repo, tag string }{
		{"shortener:v1", "shortener", "v1"},
		{"shortener", "shortener", "latest"},
		{"localhost:5000/shortener", "localhost:5000/shortener", "latest"},
		{"ghcr.io/acme/shortener:v2@sha256:abc", "ghcr.io/acme/shortener", "v2"},
	} {
		repo, tag := SplitImage(tc.image)
		if repo != tc.repo || tag != tc.tag {
			t.Errorf("SplitImage(%q) = %q, %q; want %q, %q", tc.image, repo, tag, tc.repo, tc.tag)
		}
	}
}

func TestImageTableResolve(t *testing.T) {
	tbl, err := LoadImageTable("../../images.yaml")
	if err != nil {
		t.Fatal(err)
	}
	img, err := tbl.Resolve("ghcr.io/acme/shortener:v7")
	if err != nil {
		t.Fatal(err)
	}
	if img.Command[0] != "target/debug/shortener" || img.Tag != "v7" {
		t.Fatalf("resolved %+v", img)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	env, _, err := BuildEnv(pod, &corev1.Container{}, img, []EnvPair{{Name: "POD_IP", Value: "127.0.1.5"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"SHORTENER_HOST=127.0.1.5": true, "SHORTENER_VERSION=v7": true}
	for _, e := range env {
		delete(want, e)
	}
	if len(want) != 0 {
		t.Fatalf("env %v lacks %v", env, want)
	}
	if _, err := tbl.Resolve("nginx:1.27"); err == nil {
		t.Fatal("an unmapped image must fail to resolve")
	}
	if _, err := tbl.Resolve("shortener-operator:v1"); err != nil {
		t.Fatalf("operator image: %v", err)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "y"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for in, want := range map[string]string{
		"$(A)-$(B)":   "x-y",
		"$(MISSING)":  "$(MISSING)",
		"$$(A)":       "$(A)",
		"a$b":         "a$b",
		"$(A":         "$(A",
		"tail$":       "tail$",
		"$(A)$(A)$$$": "xx$$",
	} {
		if got := Expand(in, lookup); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBuildEnvOrderAndFieldRefs(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "prod", Labels: map[string]string{"app": "web"}},
		Status:     corev1.PodStatus{PodIP: "127.0.1.9"},
	}
	c := &corev1.Container{
		Env: []corev1.EnvVar{
			{Name: "NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "URL", Value: "http://$(IP):8080/$(NAME)"},
			// Pod env overrides the image's.
			{Name: "SHORTENER_VERSION", Value: "override"},
		},
		Args: []string{"--who=$(NAME)", "$$(NAME)"},
	}
	img := ResolvedImage{Command: []string{"bin/x"}, Env: []EnvPair{{Name: "SHORTENER_VERSION", Value: "v1"}}}
	_, m, err := BuildEnv(pod, c, img, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"NAME": "web-1", "NS": "prod", "IP": "127.0.1.9", "APP": "web", "URL": "http://127.0.1.9:8080/web-1", "SHORTENER_VERSION": "override"} {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	argv := ContainerCommand(c, img, m)
	if len(argv) != 3 || argv[0] != "bin/x" || argv[1] != "--who=web-1" || argv[2] != "$(NAME)" {
		t.Errorf("argv %q", argv)
	}
	c.Command = []string{"sh", "-c"}
	if argv := ContainerCommand(c, img, m); argv[0] != "sh" || len(argv) != 4 {
		t.Errorf("spec command must replace the image's: %q", argv)
	}
}

func TestCrashBackoff(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	b := NewCrashBackoff()
	var waits []time.Duration
	for i := 0; i < 8; i++ {
		waits = append(waits, b.Failed(clk.Now(), time.Second))
	}
	want := []time.Duration{0, 10, 20, 40, 80, 160, 300, 300}
	for i := range want {
		if waits[i] != want[i]*time.Second {
			t.Fatalf("waits %v, want %v seconds", waits, want)
		}
	}
	if !b.InBackoff(clk.Now()) {
		t.Fatal("must be in back-off right after a failure")
	}
	clk.Step(300 * time.Second)
	if b.InBackoff(clk.Now()) {
		t.Fatal("back-off must end after its wait")
	}
	// A container that ran long enough starts its back-off over.
	if w := b.Failed(clk.Now(), 11*time.Minute); w != 0 {
		t.Fatalf("after a long run the next restart is immediate, got %v", w)
	}
	if w := b.Failed(clk.Now(), time.Second); w != 10*time.Second {
		t.Fatalf("then 10s, got %v", w)
	}
}

func TestPullBackoff(t *testing.T) {
	b := NewPullBackoff()
	now := time.Unix(0, 0)
	for i, want := range []time.Duration{10, 20, 40, 80, 160, 300, 300} {
		if got := b.Failed(now, 0); got != want*time.Second {
			t.Fatalf("pull failure %d: wait %v, want %vs", i, got, want)
		}
	}
}

func TestProbeThresholds(t *testing.T) {
	p := &corev1.Probe{SuccessThreshold: 2, FailureThreshold: 3}
	r := NewProbeTracker(Readiness, p)
	steps := []struct {
		ok   bool
		want bool
	}{
		{true, false}, {true, true}, // two successes needed
		{false, true}, {false, true}, {false, false}, // three failures needed
		{true, false}, {false, false}, {true, false}, {true, true},
	}
	for i, s := range steps {
		if got := r.Observe(s.ok); got != s.want {
			t.Fatalf("step %d: result %v, want %v", i, got, s.want)
		}
	}
	if !NewProbeTracker(Liveness, &corev1.Probe{}).OK() {
		t.Fatal("liveness starts healthy")
	}
	if NewProbeTracker(Startup, &corev1.Probe{}).OK() {
		t.Fatal("startup starts unpassed")
	}
}

func TestTimingDefaults(t *testing.T) {
	tm := TimingOf(&corev1.Probe{InitialDelaySeconds: 2})
	if tm.Period != 10*time.Second || tm.Timeout != time.Second || tm.InitialDelay != 2*time.Second {
		t.Fatalf("%+v", tm)
	}
}

func TestPhase(t *testing.T) {
	exit := func(code int32) *Termination { return &Termination{ExitCode: code} }
	for _, tc := range []struct {
		name   string
		policy corev1.RestartPolicy
		cs     []ContainerSnapshot
		want   corev1.PodPhase
	}{
		{"never started", corev1.RestartPolicyAlways, []ContainerSnapshot{{WaitingReason: "ErrImagePull"}}, corev1.PodPending},
		{"running", corev1.RestartPolicyAlways, []ContainerSnapshot{{Running: true}}, corev1.PodRunning},
		{"crash looping", corev1.RestartPolicyAlways, []ContainerSnapshot{{WaitingReason: "CrashLoopBackOff", Last: exit(1)}}, corev1.PodRunning},
		{"one waiting holds pending", corev1.RestartPolicyAlways, []ContainerSnapshot{{Running: true}, {WaitingReason: "ContainerCreating"}}, corev1.PodPending},
		{"never policy failed", corev1.RestartPolicyNever, []ContainerSnapshot{{Terminated: exit(2)}}, corev1.PodFailed},
		{"never policy succeeded", corev1.RestartPolicyNever, []ContainerSnapshot{{Terminated: exit(0)}}, corev1.PodSucceeded},
		{"onfailure succeeded", corev1.RestartPolicyOnFailure, []ContainerSnapshot{{Terminated: exit(0)}}, corev1.PodSucceeded},
		{"onfailure restarting", corev1.RestartPolicyOnFailure, []ContainerSnapshot{{WaitingReason: "CrashLoopBackOff", Last: exit(1)}}, corev1.PodRunning},
	} {
		if got := Phase(tc.policy, tc.cs); got != tc.want {
			t.Errorf("%s: phase %s, want %s", tc.name, got, tc.want)
		}
	}
}

func condition(st corev1.PodStatus, typ corev1.PodConditionType) corev1.PodCondition {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.PodCondition{}
}

func TestComputeStatusTransitionTimes(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	pod := &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways}}
	old := corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}}
	running := ContainerSnapshot{Name: "app", Image: "shortener:v1", Running: true, StartedAt: clk.Now(), Started: true}

	st := ComputeStatus(pod, old, []ContainerSnapshot{running}, "127.0.1.1", "127.0.0.1", clk.Now())
	if st.Phase != corev1.PodRunning || st.PodIP != "127.0.1.1" || st.PodIPs[0].IP != "127.0.1.1" || st.HostIP != "127.0.0.1" {
		t.Fatalf("status %+v", st)
	}
	notReadyAt := condition(st, corev1.PodReady).LastTransitionTime
	if condition(st, corev1.PodReady).Status != corev1.ConditionFalse || condition(st, corev1.PodReady).Message != "containers with unready status: [app]" {
		t.Fatalf("ready %+v", condition(st, corev1.PodReady))
	}
	if condition(st, corev1.PodScheduled).Status != corev1.ConditionTrue {
		t.Fatal("the scheduler's condition must be kept")
	}

	clk.Step(5 * time.Second)
	st = ComputeStatus(pod, st, []ContainerSnapshot{running}, "127.0.1.1", "127.0.0.1", clk.Now())
	if got := condition(st, corev1.PodReady).LastTransitionTime; !got.Equal(&notReadyAt) {
		t.Fatalf("unchanged condition moved its transition time: %v -> %v", notReadyAt, got)
	}

	clk.Step(5 * time.Second)
	ready := running
	ready.Ready = true
	st = ComputeStatus(pod, st, []ContainerSnapshot{ready}, "127.0.1.1", "127.0.0.1", clk.Now())
	readyAt := condition(st, corev1.PodReady).LastTransitionTime
	if condition(st, corev1.PodReady).Status != corev1.ConditionTrue || !readyAt.Time.Equal(clk.Now()) {
		t.Fatalf("ready condition %+v at %v", condition(st, corev1.PodReady), clk.Now())
	}
	if condition(st, corev1.ContainersReady).Status != corev1.ConditionTrue {
		t.Fatal("containers ready")
	}
	if !*st.ContainerStatuses[0].Started || !st.ContainerStatuses[0].Ready || st.ContainerStatuses[0].State.Running == nil {
		t.Fatalf("container status %+v", st.ContainerStatuses[0])
	}

	clk.Step(5 * time.Second)
	crashed := ContainerSnapshot{Name: "app", RestartCount: 3, WaitingReason: "CrashLoopBackOff",
		Last: &Termination{ExitCode: 1, Reason: "Error", FinishedAt: clk.Now()}}
	st = ComputeStatus(pod, st, []ContainerSnapshot{crashed}, "127.0.1.1", "127.0.0.1", clk.Now())
	cs := st.ContainerStatuses[0]
	if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" || cs.RestartCount != 3 ||
		cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 1 {
		t.Fatalf("crash status %+v", cs)
	}
	if c := condition(st, corev1.PodReady); c.Status != corev1.ConditionFalse || !c.LastTransitionTime.Time.Equal(clk.Now()) {
		t.Fatalf("ready after crash %+v", c)
	}
}

func TestReadinessGates(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.com/gate"}}}}
	ready := ContainerSnapshot{Name: "app", Running: true, Started: true, Ready: true}
	st := ComputeStatus(pod, corev1.PodStatus{}, []ContainerSnapshot{ready}, "127.0.1.1", "127.0.0.1", time.Unix(0, 0))
	if condition(st, corev1.PodReady).Status != corev1.ConditionFalse || condition(st, corev1.ContainersReady).Status != corev1.ConditionTrue {
		t.Fatal("an unmet readiness gate keeps the pod unready")
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: "example.com/gate", Status: corev1.ConditionTrue})
	st = ComputeStatus(pod, st, []ContainerSnapshot{ready}, "127.0.1.1", "127.0.0.1", time.Unix(1, 0))
	if condition(st, corev1.PodReady).Status != corev1.ConditionTrue {
		t.Fatal("a met readiness gate lets the pod be ready")
	}
}

func TestIPAllocator(t *testing.T) {
	a := NewIPAllocator()
	first, err := a.Allocate()
	if err != nil || first.String() != "127.0.1.1" {
		t.Fatalf("first %v %v", first, err)
	}
	seen := map[string]bool{first.String(): true}
	for i := 0; i < 300; i++ {
		ip, err := a.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		if seen[ip.String()] || !InPodRange(ip) {
			t.Fatalf("duplicate or out-of-range %v", ip)
		}
		seen[ip.String()] = true
	}
	a.Release(first)
	next, _ := a.Allocate()
	if next == first {
		t.Fatal("a released address must not be handed out again at once")
	}
	if a.Reserve(next) {
		t.Fatal("reserving an address in use must fail")
	}
}

func svcPod(name string, ready bool, ip string) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status:     corev1.PodStatus{PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func TestServiceEndpoints(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "127.96.0.10", Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	terminating := svcPod("c", true, "127.0.1.3")
	now := metav1.Now()
	terminating.DeletionTimestamp = &now
	other := svcPod("d", true, "127.0.1.4")
	other.Namespace = "elsewhere"
	e := ServiceEndpoints(svc, []*corev1.Pod{svcPod("a", true, "127.0.1.1"), svcPod("b", false, "127.0.1.2"), terminating, other})
	if e == nil || len(e.Ports) != 1 || e.Ports[0].Listen != "127.96.0.10:80" {
		t.Fatalf("entry %+v", e)
	}
	eps := e.Ports[0].Endpoints
	if len(eps) != 1 || eps[0].Addr != "127.0.1.1:8080" || eps[0].Pod != "a" {
		t.Fatalf("only the ready, non-terminating pod of the namespace may serve: %+v", eps)
	}
	svc.Spec.PublishNotReadyAddresses = true
	if n := len(ServiceEndpoints(svc, []*corev1.Pod{svcPod("b", false, "127.0.1.2")}).Ports[0].Endpoints); n != 1 {
		t.Fatal("publishNotReadyAddresses includes unready pods")
	}
	svc.Spec.ClusterIP = "None"
	if ServiceEndpoints(svc, nil) != nil {
		t.Fatal("headless services are not proxied")
	}
}

type fakeRefs struct{ cms, secrets map[string]map[string]string }

func (f fakeRefs) ConfigMapKey(_, name, key string) (string, bool, error) {
	v, ok := f.cms[name][key]
	return v, ok, nil
}
func (f fakeRefs) SecretKey(_, name, key string) (string, bool, error) {
	v, ok := f.secrets[name][key]
	return v, ok, nil
}
func (f fakeRefs) ConfigMapData(_, name string) (map[string]string, bool, error) {
	d, ok := f.cms[name]
	return d, ok, nil
}
func (f fakeRefs) SecretData(_, name string) (map[string]string, bool, error) {
	d, ok := f.secrets[name]
	return d, ok, nil
}

func TestEnvFromAndKeyRefs(t *testing.T) {
	refs := fakeRefs{
		cms:     map[string]map[string]string{"cfg": {"LEVEL": "debug", "bad key": "x", "PORT": "1"}},
		secrets: map[string]map[string]string{"sec": {"TOKEN": "s3cret"}},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	c := &corev1.Container{
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "APP_"},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Optional: ptrTo(true)}},
		},
		Env: []corev1.EnvVar{
			{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "TOKEN"}}},
			{Name: "PORT", Value: "$(APP_PORT)0"},
		},
	}
	_, m, err := BuildEnv(pod, c, ResolvedImage{}, nil, refs)
	if err != nil {
		t.Fatal(err)
	}
	if m["APP_LEVEL"] != "debug" || m["TOKEN"] != "s3cret" || m["PORT"] != "10" {
		t.Fatalf("env %v", m)
	}
	if _, ok := m["APP_bad key"]; ok {
		t.Fatal("invalid names are skipped")
	}
	c.EnvFrom[1].SecretRef.Optional = nil
	if _, _, err := BuildEnv(pod, c, ResolvedImage{}, nil, refs); err == nil {
		t.Fatal("a missing, non-optional envFrom source is a config error")
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestUnhealthyEvent(t *testing.T) {
	refused := errors.New("connect: connection refused")
	cases := []struct {
		kind       ProbeKind
		before, ok bool
		err        error
		want       string
	}{
		{Startup, false, false, refused, "Startup probe failed: connect: connection refused"},
		{Startup, false, true, nil, ""},
		{Readiness, true, false, refused, "Readiness probe failed: connect: connection refused"},
		{Readiness, false, false, refused, ""},
		{Liveness, true, false, refused, "Liveness probe failed: connect: connection refused"},
		{Liveness, true, true, refused, ""},
		{Liveness, true, true, nil, ""},
	}
	for _, c := range cases {
		msg, emit := unhealthyEvent(c.kind, c.before, c.ok, c.err)
		if msg != c.want || emit != (c.want != "") {
			t.Errorf("%s before=%v ok=%v err=%v: got %q %v, want %q", c.kind, c.before, c.ok, c.err, msg, emit, c.want)
		}
	}
}
