package node

import "time"

// Backoff is the kubelet's per-container restart (and image pull) back-off: the first
// retry is immediate, then each wait doubles from Initial up to Max; a container that
// ran for ResetAfter without failing starts over.
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration
	ResetAfter time.Duration
	// ImmediateFirst lets the first retry run at once (container restarts); image pulls
	// wait Initial after their first failure.
	ImmediateFirst bool

	current  time.Duration
	lastWait time.Duration
	until    time.Time
}

// NewCrashBackoff returns the kubelet's defaults for container restarts.
func NewCrashBackoff() *Backoff {
	return &Backoff{Initial: 10 * time.Second, Max: 300 * time.Second, ResetAfter: 10 * time.Minute, ImmediateFirst: true}
}

// NewPullBackoff returns the kubelet's defaults for image pulls.
func NewPullBackoff() *Backoff {
	return &Backoff{Initial: 10 * time.Second, Max: 300 * time.Second, ResetAfter: 0}
}

// Failed records a failure at now of an attempt that had run for ran (zero for pulls),
// and returns how long to wait before the next attempt.
func (b *Backoff) Failed(now time.Time, ran time.Duration) time.Duration {
	if b.ResetAfter > 0 && ran >= b.ResetAfter {
		b.current = 0
	}
	wait := b.current
	switch {
	case b.current == 0 && !b.ImmediateFirst:
		wait = b.Initial
		b.current = min(2*b.Initial, b.Max)
	case b.current == 0:
		b.current = b.Initial
	case b.current*2 > b.Max:
		b.current = b.Max
	default:
		b.current *= 2
	}
	b.until = now.Add(wait)
	b.lastWait = wait
	return wait
}

// InBackoff reports whether the next attempt must still wait at now.
func (b *Backoff) InBackoff(now time.Time) bool { return now.Before(b.until) }

// Remaining is the wait left at now (zero when the next attempt may run).
func (b *Backoff) Remaining(now time.Time) time.Duration {
	if d := b.until.Sub(now); d > 0 {
		return d
	}
	return 0
}

// LastWait is the wait the last failure started, as the kubelet reports it in the
// CrashLoopBackOff message.
func (b *Backoff) LastWait() time.Duration { return b.lastWait }
