package node

import (
	"fmt"
	"net/netip"
	"sync"
)

// IPAllocator hands out pod IPs 127.0.x.y with x >= 1, so a pod never takes 127.0.0.1
// (the node's address). Released addresses go to the back of the queue: a new pod
// should not inherit a just-deleted pod's address while clients may still hold it.
type IPAllocator struct {
	mu    sync.Mutex
	next  int
	inUse map[netip.Addr]bool
	freed []netip.Addr
}

const ipPoolSize = 255 * 254 // 127.0.1.1 .. 127.0.255.254

// NewIPAllocator returns an empty allocator.
func NewIPAllocator() *IPAllocator { return &IPAllocator{inUse: map[netip.Addr]bool{}} }

func indexToAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 0, byte(1 + i/254), byte(1 + i%254)})
}

// Allocate returns an unused address.
func (a *IPAllocator) Allocate() (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.next < ipPoolSize {
		ip := indexToAddr(a.next)
		a.next++
		if !a.inUse[ip] {
			a.inUse[ip] = true
			return ip, nil
		}
	}
	for len(a.freed) > 0 {
		ip := a.freed[0]
		a.freed = a.freed[1:]
		if !a.inUse[ip] {
			a.inUse[ip] = true
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("pod IP pool 127.0.1.1-127.0.255.254 exhausted")
}

// Reserve marks an address (e.g. from a pod's existing status) as taken.
func (a *IPAllocator) Reserve(ip netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !InPodRange(ip) || a.inUse[ip] {
		return false
	}
	a.inUse[ip] = true
	return true
}

// Release returns an address to the pool.
func (a *IPAllocator) Release(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inUse[ip] {
		delete(a.inUse, ip)
		a.freed = append(a.freed, ip)
	}
}

// InPodRange reports whether ip is one the allocator could have handed out.
func InPodRange(ip netip.Addr) bool {
	b := ip.As4()
	return ip.Is4() && b[0] == 127 && b[1] == 0 && b[2] >= 1 && b[3] >= 1 && b[3] <= 254
}
