package node

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Termination is how a container instance ended.
type Termination struct {
	ExitCode    int32
	Signal      int32
	Reason      string
	Message     string
	StartedAt   time.Time
	FinishedAt  time.Time
	ContainerID string
}

// ContainerSnapshot is the node agent's view of one container, from which the API status
// is derived. Exactly one of Waiting, Running and Terminated describes the current state.
type ContainerSnapshot struct {
	Name         string
	Image        string
	ImageID      string
	ContainerID  string
	RestartCount int32

	WaitingReason  string
	WaitingMessage string
	Running        bool
	StartedAt      time.Time
	Terminated     *Termination
	Last           *Termination

	Started bool
	Ready   bool
}

// ComputeStatus derives the pod status a kubelet would report. old is the status last
// seen on the API object: conditions keep their lastTransitionTime unless their status
// flips, because minReadySeconds and availability are measured from it.
func ComputeStatus(pod *corev1.Pod, old corev1.PodStatus, cs []ContainerSnapshot, podIP, hostIP string, now time.Time) corev1.PodStatus {
	st := *old.DeepCopy()
	st.HostIP = hostIP
	st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	if podIP != "" {
		st.PodIP = podIP
		st.PodIPs = []corev1.PodIP{{IP: podIP}}
	}
	if st.StartTime == nil {
		t := metav1.NewTime(now)
		st.StartTime = &t
	}
	st.Phase = Phase(pod.Spec.RestartPolicy, cs)

	statuses := make([]corev1.ContainerStatus, 0, len(cs))
	allReady := len(cs) > 0
	var unready []string
	for _, c := range cs {
		statuses = append(statuses, containerStatus(c))
		if !c.Ready {
			allReady = false
			unready = append(unready, c.Name)
		}
	}
	st.ContainerStatuses = statuses

	notReadyReason, notReadyMsg := "ContainersNotReady", ""
	if len(unready) > 0 {
		notReadyMsg = fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	}
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		allReady = false
		notReadyReason, notReadyMsg = "PodCompleted", ""
	}
	podReady := allReady
	for _, g := range pod.Spec.ReadinessGates {
		if !conditionTrue(old.Conditions, g.ConditionType) {
			podReady = false
			if notReadyMsg == "" {
				notReadyReason = "ReadinessGatesNotReady"
				notReadyMsg = fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", g.ConditionType)
			}
		}
	}

	set := func(t corev1.PodConditionType, ok bool, reason, msg string) {
		st.Conditions = setCondition(st.Conditions, t, ok, reason, msg, now)
	}
	set(corev1.PodReadyToStartContainers, true, "", "")
	set(corev1.PodInitialized, true, "", "")
	if allReady {
		set(corev1.ContainersReady, true, "", "")
	} else {
		set(corev1.ContainersReady, false, notReadyReason, notReadyMsg)
	}
	if podReady {
		set(corev1.PodReady, true, "", "")
	} else {
		set(corev1.PodReady, false, notReadyReason, notReadyMsg)
	}
	sortConditions(st.Conditions)
	return st
}

// Phase follows the kubelet's getPhase for pods without init containers.
func Phase(policy corev1.RestartPolicy, cs []ContainerSnapshot) corev1.PodPhase {
	var waiting, running, stopped, succeeded int
	for _, c := range cs {
		switch {
		case c.Running:
			running++
		case c.Terminated != nil:
			stopped++
			if c.Terminated.ExitCode == 0 {
				succeeded++
			}
		case c.Last != nil:
			// Waiting to restart after an exit counts as stopped, not as never started.
			stopped++
			if c.Last.ExitCode == 0 {
				succeeded++
			}
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		if policy == corev1.RestartPolicyAlways {
			return corev1.PodRunning
		}
		if stopped == succeeded {
			return corev1.PodSucceeded
		}
		if policy == corev1.RestartPolicyNever {
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

func containerStatus(c ContainerSnapshot) corev1.ContainerStatus {
	started := c.Started
	s := corev1.ContainerStatus{
		Name:         c.Name,
		Image:        c.Image,
		ImageID:      c.ImageID,
		ContainerID:  c.ContainerID,
		RestartCount: c.RestartCount,
		Ready:        c.Ready,
		Started:      &started,
	}
	switch {
	case c.Running:
		s.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.StartedAt)}
	case c.Terminated != nil:
		s.State.Terminated = terminated(c.Terminated)
		s.ContainerID = c.Terminated.ContainerID
	default:
		s.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.WaitingReason, Message: c.WaitingMessage}
	}
	if c.Last != nil {
		s.LastTerminationState.Terminated = terminated(c.Last)
	}
	return s
}

func terminated(t *Termination) *corev1.ContainerStateTerminated {
	return &corev1.ContainerStateTerminated{
		ExitCode:    t.ExitCode,
		Signal:      t.Signal,
		Reason:      t.Reason,
		Message:     t.Message,
		StartedAt:   metav1.NewTime(t.StartedAt),
		FinishedAt:  metav1.NewTime(t.FinishedAt),
		ContainerID: t.ContainerID,
	}
}

func conditionTrue(conds []corev1.PodCondition, t corev1.PodConditionType) bool {
	for _, c := range conds {
		if c.Type == t {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// setCondition updates or adds a condition; lastTransitionTime moves only when the status flips.
func setCondition(conds []corev1.PodCondition, t corev1.PodConditionType, ok bool, reason, msg string, now time.Time) []corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	for i := range conds {
		if conds[i].Type != t {
			continue
		}
		if conds[i].Status != status {
			conds[i].LastTransitionTime = metav1.NewTime(now)
		}
		conds[i].Status, conds[i].Reason, conds[i].Message = status, reason, msg
		return conds
	}
	return append(conds, corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(now)})
}

var conditionOrder = map[corev1.PodConditionType]int{
	corev1.PodReadyToStartContainers: 0, corev1.PodInitialized: 1, corev1.PodReady: 2, corev1.ContainersReady: 3, corev1.PodScheduled: 4,
}

func sortConditions(c []corev1.PodCondition) {
	sort.SliceStable(c, func(i, j int) bool {
		oi, iok := conditionOrder[c[i].Type]
		oj, jok := conditionOrder[c[j].Type]
		if !iok {
			oi = 100
		}
		if !jok {
			oj = 100
		}
		return oi < oj
	})
}
