package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// container is the agent's record of one container of a pod across its restarts.
type container struct {
	spec  corev1.Container
	dir   string // holds current.log and previous.log
	env   []string
	image *ResolvedImage

	pullErr      error
	pullBackoff  *Backoff
	lastPullFail time.Time

	crash        *Backoff
	configErr    string
	restartCount int32
	instance     int

	proc         *process
	running      bool
	liveInstance atomic.Int64 // instance number while running, for log followers
	startedAt    time.Time
	started      bool
	probes       map[ProbeKind]*ProbeTracker
	probeCtx     context.Context
	probeCancel  context.CancelFunc
	probesLive   bool // readiness and liveness workers started (after startup passed)
	killDeadline time.Time
	killing      bool
	killReason   string

	exited *Termination // latest exit not yet followed by a restart
	last   *Termination // exit before the current instance
}

type probeResult struct {
	container int
	instance  int
	kind      ProbeKind
	err       error
}

type exitEvent struct {
	container int
	instance  int
	info      exitInfo
	at        time.Time
}

// podWorker owns one pod: its containers, probes and status. One goroutine runs it,
// so its state needs no locks except what log readers touch.
type podWorker struct {
	a      *Agent
	uid    types.UID
	podCh  chan *corev1.Pod
	exitCh chan exitEvent
	probes chan probeResult
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex // guards pod and containers' dir for log readers
	pod     *corev1.Pod
	ip      netip.Addr
	hostNet bool
	dir     string
	ctrs    []*container

	posted      *corev1.PodStatus
	saDir       string
	tokenExpiry time.Time
	termStarted bool
}

func newPodWorker(a *Agent, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		a:      a,
		uid:    pod.UID,
		podCh:  make(chan *corev1.Pod, 1),
		exitCh: make(chan exitEvent, 16),
		probes: make(chan probeResult, 64),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		pod:    pod,
		dir:    filepath.Join(a.cfg.StateDir, "pods", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID)),
	}
	for _, c := range pod.Spec.Containers {
		w.ctrs = append(w.ctrs, &container{
			spec:        c,
			dir:         filepath.Join(w.dir, c.Name),
			pullBackoff: NewPullBackoff(),
			crash:       a.cfg.CrashBackoff(),
		})
	}
	return w
}

// update hands the worker the latest version of its pod, dropping an unread older one.
func (w *podWorker) update(p *corev1.Pod) {
	select {
	case <-w.podCh:
	default:
	}
	w.podCh <- p
}

func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	log := slog.With("pod", w.pod.Namespace+"/"+w.pod.Name)
	if err := w.setup(); err != nil {
		log.Error("pod setup failed", "err", err)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// The agent is stopping (cluster-down): take the pod's processes with it, and
			// wait for them so their pid files are gone before the agent exits.
			w.killAll(syscall.SIGKILL)
			w.waitExits(5 * time.Second)
			return
		case <-w.stop:
			// The pod object is gone (force-deleted): nothing to report to, just stop.
			w.killAll(syscall.SIGKILL)
			w.waitExits(5 * time.Second)
			w.cleanup()
			return
		case p := <-w.podCh:
			w.mu.Lock()
			w.pod = p
			w.mu.Unlock()
		case e := <-w.exitCh:
			w.onExit(e)
		case r := <-w.probes:
			w.onProbe(r, log)
		case <-tick.C:
		}
		if finished := w.sync(ctx, log); finished {
			w.cleanup()
			return
		}
	}
}

func (w *podWorker) setup() error {
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return err
	}
	for _, c := range w.ctrs {
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			return err
		}
	}
	if w.pod.Spec.HostNetwork {
		// A host-network pod shares the node's address; it owns no pod IP.
		ip, err := netip.ParseAddr(w.a.cfg.NodeIP)
		w.ip, w.hostNet = ip, true
		return err
	}
	if w.pod.Status.PodIP != "" {
		if ip, err := netip.ParseAddr(w.pod.Status.PodIP); err == nil && w.a.ips.Reserve(ip) {
			w.ip = ip
		}
	}
	if !w.ip.IsValid() {
		ip, err := w.a.ips.Allocate()
		if err != nil {
			return err
		}
		w.ip = ip
	}
	return nil
}

func (w *podWorker) cleanup() {
	if w.ip.IsValid() && !w.hostNet {
		w.a.ips.Release(w.ip)
	}
	_ = os.RemoveAll(w.dir)
}

func (w *podWorker) killAll(sig syscall.Signal) {
	for _, c := range w.ctrs {
		if c.running && c.proc != nil {
			c.proc.signal(sig)
		}
	}
}

func (w *podWorker) waitExits(limit time.Duration) {
	deadline := time.After(limit)
	for w.anyRunning() {
		select {
		case e := <-w.exitCh:
			w.onExit(e)
		case <-deadline:
			return
		}
	}
}

func (w *podWorker) anyRunning() bool {
	for _, c := range w.ctrs {
		if c.running {
			return true
		}
	}
	return false
}

func (w *podWorker) now() time.Time { return w.a.cfg.Clock.Now() }

func (w *podWorker) onExit(e exitEvent) {
	c := w.ctrs[e.container]
	if e.instance != c.instance || !c.running {
		return
	}
	c.running = false
	c.liveInstance.Store(0)
	c.started, c.probesLive = false, false
	if c.probeCancel != nil {
		c.probeCancel()
	}
	reason := "Error"
	if e.info.code == 0 {
		reason = "Completed"
	}
	msg := ""
	if e.info.err != nil {
		msg = e.info.err.Error()
	}
	c.exited = &Termination{
		ExitCode: e.info.code, Signal: e.info.signal, Reason: reason, Message: msg,
		StartedAt: c.startedAt, FinishedAt: e.at, ContainerID: containerID(w.uid, c.spec.Name, c.instance),
	}
	c.killing = false
	if restarts(w.pod.Spec.RestartPolicy, e.info.code) {
		c.crash.Failed(e.at, e.at.Sub(c.startedAt))
	}
}

func (w *podWorker) onProbe(r probeResult, log *slog.Logger) {
	c := w.ctrs[r.container]
	if r.instance != c.instance || !c.running {
		return
	}
	t := c.probes[r.kind]
	if t == nil {
		return
	}
	before := t.OK()
	ok := t.Observe(r.err == nil)
	if r.err != nil && r.kind != Readiness || before != ok {
		log.Debug("probe", "container", c.spec.Name, "kind", r.kind, "ok", ok, "err", r.err)
	}
	if msg, emit := unhealthyEvent(r.kind, before, ok, r.err); emit {
		w.a.event(w.pod, corev1.EventTypeWarning, "Unhealthy", msg)
	}
	switch r.kind {
	case Startup:
		if ok {
			c.started = true
		} else if t.Failures() >= t.FailureThreshold && !c.killing {
			w.kill(c, "Container "+c.spec.Name+" failed startup probe, will be restarted")
		}
	case Liveness:
		if !ok && !c.killing {
			w.kill(c, "Container "+c.spec.Name+" failed liveness probe, will be restarted")
		}
	}
}

// unhealthyEvent is the kubelet's Unhealthy Event for one probe result: every failed
// startup probe (the kubelet records each; the recorder aggregates repeats), so a container
// killed for not starting has "Startup probe failed: ..." next to its Killing Event; for
// readiness and liveness only a failure that changes the result (the kubelet records every
// failure; testenv keeps the event stream of its 1 s readiness probes quiet).
func unhealthyEvent(kind ProbeKind, before, ok bool, err error) (string, bool) {
	if err == nil || (kind != Startup && before == ok) {
		return "", false
	}
	return fmt.Sprintf("%s probe failed: %v", capitalize(string(kind)), err), true
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-32) + s[1:]
}

func (w *podWorker) kill(c *container, reason string) {
	if c.proc == nil || !c.running {
		return
	}
	w.a.event(w.pod, corev1.EventTypeNormal, "Killing", reason)
	c.killing, c.killReason = true, reason
	c.killDeadline = w.now().Add(w.gracePeriod())
	c.proc.signal(syscall.SIGTERM)
}

func (w *podWorker) gracePeriod() time.Duration {
	if p := w.pod.DeletionGracePeriodSeconds; p != nil {
		return time.Duration(*p) * time.Second
	}
	if p := w.pod.Spec.TerminationGracePeriodSeconds; p != nil {
		return time.Duration(*p) * time.Second
	}
	return 30 * time.Second
}

// restarts applies restartPolicy to an exit code.
func restarts(policy corev1.RestartPolicy, code int32) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return true
}

func containerID(uid types.UID, name string, instance int) string {
	return fmt.Sprintf("testenv://%s-%s-%d", uid, name, instance)
}

// sync drives containers toward the pod spec and reports status. It returns true once a
// deleted pod has stopped and its object was removed.
func (w *podWorker) sync(ctx context.Context, log *slog.Logger) bool {
	now := w.now()
	pod := w.pod
	if pod.DeletionTimestamp != nil {
		return w.terminate(ctx, log, now)
	}
	for i, c := range w.ctrs {
		if c.killing && now.After(c.killDeadline) && c.proc != nil {
			c.proc.signal(syscall.SIGKILL)
		}
		if c.running {
			if c.started && !c.probesLive {
				w.startProbes(i, c, Readiness, Liveness)
				c.probesLive = true
			}
			continue
		}
		if c.image == nil && !w.pull(c, now) {
			continue
		}
		if c.exited != nil {
			if !restarts(pod.Spec.RestartPolicy, c.exited.ExitCode) || c.crash.InBackoff(now) {
				continue
			}
		}
		if w.saNeeded() && now.After(w.tokenExpiry) {
			if err := w.writeServiceAccount(ctx, now); err != nil {
				c.configErr = err.Error()
				continue
			}
		}
		w.start(ctx, i, c, now, log)
	}
	if w.saNeeded() && !w.tokenExpiry.IsZero() && now.After(w.tokenExpiry) {
		if err := w.writeServiceAccount(ctx, now); err != nil {
			log.Warn("refreshing service account token", "err", err)
		}
	}
	w.report(ctx, log, now)
	return false
}

// pull resolves the container image through the image table, with the kubelet's pull back-off.
func (w *podWorker) pull(c *container, now time.Time) bool {
	if c.pullBackoff.InBackoff(now) {
		return false
	}
	img, err := w.a.cfg.Images.Resolve(c.spec.Image)
	if err != nil {
		if c.pullErr == nil {
			w.a.event(w.pod, corev1.EventTypeWarning, "Failed", fmt.Sprintf("Failed to pull image %q: %v", c.spec.Image, err))
		}
		c.pullErr = err
		c.lastPullFail = now
		c.pullBackoff.Failed(now, 0)
		return false
	}
	c.pullErr = nil
	c.image = &img
	return true
}

func (w *podWorker) start(ctx context.Context, idx int, c *container, now time.Time, log *slog.Logger) {
	// HOME is the pod's own directory: tools that cache under ~ (kubectl) must not write
	// into the repository (the working directory) or the real home.
	base := []EnvPair{
		{Name: "PATH", Value: os.Getenv("PATH")}, {Name: "HOME", Value: w.dir},
		{Name: "HOSTNAME", Value: w.pod.Name}, {Name: "POD_IP", Value: w.ip.String()},
	}
	if w.saNeeded() {
		base = append(base, EnvPair{Name: "KUBECONFIG", Value: filepath.Join(w.saDir, "kubeconfig")})
	}
	podView := w.pod.DeepCopy()
	podView.Status.PodIP = w.ip.String()
	podView.Status.PodIPs = []corev1.PodIP{{IP: w.ip.String()}}
	podView.Status.HostIP = w.a.cfg.NodeIP
	env, envMap, err := BuildEnv(podView, &c.spec, *c.image, base, w.a.refs)
	if err != nil {
		c.configErr = err.Error()
		return
	}
	c.configErr = ""
	c.env = env
	argv := ContainerCommand(&c.spec, *c.image, envMap)
	dir := w.a.cfg.RepoRoot
	if c.spec.WorkingDir != "" {
		dir = c.spec.WorkingDir
	}
	cur := filepath.Join(c.dir, "current.log")
	if c.instance > 0 {
		_ = os.Rename(cur, filepath.Join(c.dir, "previous.log"))
	}
	if c.exited != nil {
		c.last = c.exited
		c.exited = nil
		c.restartCount++
	}
	c.instance++
	inst := c.instance
	c.startedAt = now
	proc, err := startProcess(argv, env, dir, cur, w.a.pidDir, w.a.cfg.Clock.Now, func(info exitInfo) {
		w.exitCh <- exitEvent{container: idx, instance: inst, info: info, at: w.a.cfg.Clock.Now()}
	})
	if err != nil {
		// A command that cannot start is a failed container: it back-offs like a crash.
		c.exited = &Termination{ExitCode: 128, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now,
			ContainerID: containerID(w.uid, c.spec.Name, inst)}
		c.crash.Failed(now, 0)
		w.a.event(w.pod, corev1.EventTypeWarning, "Failed", "Error: "+err.Error())
		return
	}
	log.Info("container started", "container", c.spec.Name, "argv", argv, "ip", w.ip, "restart", c.restartCount)
	w.a.event(w.pod, corev1.EventTypeNormal, "Started", "Started container "+c.spec.Name)
	c.proc, c.running, c.killing = proc, true, false
	c.liveInstance.Store(int64(inst))
	c.probes = map[ProbeKind]*ProbeTracker{}
	c.probeCtx, c.probeCancel = context.WithCancel(ctx)
	c.started = c.spec.StartupProbe == nil
	c.probesLive = false
	if c.spec.StartupProbe != nil {
		w.startProbes(idx, c, Startup)
	}
}

// startProbes starts one prober goroutine per configured probe of the current instance;
// they stop when the instance exits (its probe context is cancelled).
func (w *podWorker) startProbes(idx int, c *container, kinds ...ProbeKind) {
	for _, k := range kinds {
		p := probeOf(&c.spec, k)
		if p == nil {
			continue
		}
		c.probes[k] = NewProbeTracker(k, p)
		go w.prober(c.probeCtx, idx, c.instance, c.startedAt, k, p, c.spec, c.env)
	}
}

func probeOf(c *corev1.Container, k ProbeKind) *corev1.Probe {
	switch k {
	case Startup:
		return c.StartupProbe
	case Readiness:
		return c.ReadinessProbe
	}
	return c.LivenessProbe
}

func (w *podWorker) prober(ctx context.Context, idx, inst int, started time.Time, kind ProbeKind, p *corev1.Probe, spec corev1.Container, env []string) {
	t := TimingOf(p)
	clk := w.a.cfg.Clock
	if d := started.Add(t.InitialDelay).Sub(clk.Now()); d > 0 {
		select {
		case <-clk.After(d):
		case <-ctx.Done():
			return
		}
	}
	for {
		err := RunProbe(ctx, p, &spec, w.ip.String(), env, w.a.cfg.RepoRoot)
		select {
		case w.probes <- probeResult{container: idx, instance: inst, kind: kind, err: err}:
		case <-ctx.Done():
			return
		}
		if kind == Startup && err == nil {
			return
		}
		select {
		case <-clk.After(t.Period):
		case <-ctx.Done():
			return
		}
	}
}

// terminate runs the deletion sequence: SIGTERM, the grace period, SIGKILL, then removal
// of the pod object with grace 0, as the kubelet does once containers have stopped.
func (w *podWorker) terminate(ctx context.Context, log *slog.Logger, now time.Time) bool {
	if !w.termStarted {
		w.termStarted = true
		for _, c := range w.ctrs {
			if c.running {
				w.kill(c, "Stopping container "+c.spec.Name)
			}
		}
	}
	for _, c := range w.ctrs {
		if c.running && now.After(c.killDeadline) && c.proc != nil {
			c.proc.signal(syscall.SIGKILL)
		}
	}
	if w.anyRunning() {
		w.report(ctx, log, now)
		return false
	}
	zero := int64(0)
	uid := w.uid
	err := w.a.client.CoreV1().Pods(w.pod.Namespace).Delete(ctx, w.pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		log.Warn("deleting pod", "err", err)
		return false
	}
	log.Info("pod terminated and deleted")
	return true
}

func (w *podWorker) snapshots(now time.Time) []ContainerSnapshot {
	out := make([]ContainerSnapshot, 0, len(w.ctrs))
	for _, c := range w.ctrs {
		s := ContainerSnapshot{
			Name: c.spec.Name, Image: c.spec.Image, RestartCount: c.restartCount,
			Last: c.last, Started: c.running && c.started,
		}
		if c.image != nil {
			s.ImageID = "testenv://" + c.spec.Image
		}
		switch {
		case c.running:
			s.Running, s.StartedAt = true, c.startedAt
			s.ContainerID = containerID(w.uid, c.spec.Name, c.instance)
			rp := c.probes[Readiness]
			s.Ready = c.started && (c.spec.ReadinessProbe == nil || (rp != nil && rp.OK()))
		case c.exited != nil && restarts(w.pod.Spec.RestartPolicy, c.exited.ExitCode) && w.pod.DeletionTimestamp == nil:
			s.Last = c.exited
			s.WaitingReason = "CrashLoopBackOff"
			s.WaitingMessage = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
				c.crash.LastWait(), c.spec.Name, w.pod.Name, w.pod.Namespace, w.uid)
			if !c.crash.InBackoff(now) {
				s.WaitingReason, s.WaitingMessage = "ContainerCreating", ""
			}
			if c.configErr != "" {
				s.WaitingReason, s.WaitingMessage = "CreateContainerConfigError", c.configErr
			}
		case c.exited != nil:
			s.Terminated = c.exited
		case c.pullErr != nil:
			s.WaitingReason, s.WaitingMessage = "ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: %v", c.spec.Image, c.pullErr)
			// The kubelet reports the failed attempt itself first, then the back-off.
			if now.Sub(c.lastPullFail) < 3*time.Second {
				s.WaitingReason, s.WaitingMessage = "ErrImagePull", c.pullErr.Error()
			}
		case c.configErr != "":
			s.WaitingReason, s.WaitingMessage = "CreateContainerConfigError", c.configErr
		default:
			s.WaitingReason = "ContainerCreating"
		}
		out = append(out, s)
	}
	return out
}

var ownedConditions = map[corev1.PodConditionType]bool{
	corev1.PodReadyToStartContainers: true, corev1.PodInitialized: true, corev1.ContainersReady: true, corev1.PodReady: true,
}

func (w *podWorker) report(ctx context.Context, log *slog.Logger, now time.Time) {
	pod := w.pod
	old := pod.Status.DeepCopy()
	if w.posted != nil {
		// Our last write may not have reached the informer yet; its conditions carry the
		// transition times to preserve.
		var merged []corev1.PodCondition
		for _, c := range old.Conditions {
			if !ownedConditions[c.Type] {
				merged = append(merged, c)
			}
		}
		for _, c := range w.posted.Conditions {
			if ownedConditions[c.Type] {
				merged = append(merged, c)
			}
		}
		old.Conditions = merged
		if old.StartTime == nil {
			old.StartTime = w.posted.StartTime
		}
	}
	st := ComputeStatus(pod, *old, w.snapshots(now), w.ip.String(), w.a.cfg.NodeIP, now)
	if equality.Semantic.DeepEqual(st, pod.Status) || (w.posted != nil && equality.Semantic.DeepEqual(st, *w.posted)) {
		return
	}
	upd := pod.DeepCopy()
	upd.Status = st
	res, err := w.a.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		fresh, gerr := w.a.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if gerr != nil || fresh.UID != w.uid {
			return
		}
		w.mu.Lock()
		w.pod = fresh
		w.mu.Unlock()
		upd = fresh.DeepCopy()
		upd.Status = ComputeStatus(fresh, *old, w.snapshots(now), w.ip.String(), w.a.cfg.NodeIP, now)
		res, err = w.a.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	}
	if err != nil {
		if !apierrors.IsNotFound(err) {
			log.Warn("updating pod status", "err", err)
		}
		return
	}
	s := res.Status
	w.posted = &s
}
