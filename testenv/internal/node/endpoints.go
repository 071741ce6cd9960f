package node

import (
	"net/netip"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Endpoint is one backend address of a Service port.
type Endpoint struct {
	Pod  string `json:"pod"`
	Addr string `json:"addr"`
}

// ServicePort is one forwarded port: Listen is where host clients connect.
type ServicePort struct {
	Name      string     `json:"name"`
	Port      int32      `json:"port"`
	NodePort  int32      `json:"nodePort,omitempty"`
	Listen    string     `json:"address"`
	Endpoints []Endpoint `json:"endpoints"`
}

// ServiceEntry is what .testenv/services.json publishes per Service.
type ServiceEntry struct {
	Namespace string        `json:"namespace"`
	Name      string        `json:"name"`
	ClusterIP string        `json:"clusterIP"`
	Ports     []ServicePort `json:"ports"`
}

// PodReady is the rule the EndpointSlice controller applies: a pod serves traffic when its
// Ready condition is True and it is not terminating.
func PodReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
		return false
	}
	return conditionTrue(p.Status.Conditions, corev1.PodReady)
}

// ServiceEndpoints computes the ready backends of every TCP port of a Service from the
// pods it selects. The EndpointSlice controller cannot publish these: the API server
// rejects loopback addresses in EndpointSlices, so the proxy derives them the same way.
func ServiceEndpoints(svc *corev1.Service, pods []*corev1.Pod) *ServiceEntry {
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || svc.Spec.Selector == nil {
		return nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	e := &ServiceEntry{Namespace: svc.Namespace, Name: svc.Name, ClusterIP: svc.Spec.ClusterIP}
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		port := ServicePort{Name: sp.Name, Port: sp.Port, NodePort: sp.NodePort, Listen: netip.AddrPortFrom(ip, uint16(sp.Port)).String(), Endpoints: []Endpoint{}}
		for _, p := range pods {
			if p.Namespace != svc.Namespace || !sel.Matches(labels.Set(p.Labels)) {
				continue
			}
			if !svc.Spec.PublishNotReadyAddresses && !PodReady(p) {
				continue
			}
			if p.Status.PodIP == "" {
				continue
			}
			tp, ok := targetPort(sp, p)
			if !ok {
				continue
			}
			port.Endpoints = append(port.Endpoints, Endpoint{Pod: p.Name, Addr: p.Status.PodIP + ":" + strconv.Itoa(tp)})
		}
		sort.Slice(port.Endpoints, func(i, j int) bool { return port.Endpoints[i].Addr < port.Endpoints[j].Addr })
		e.Ports = append(e.Ports, port)
	}
	return e
}

func targetPort(sp corev1.ServicePort, p *corev1.Pod) (int, bool) {
	tp := sp.TargetPort
	if tp.Type == intstr.Int {
		if tp.IntVal == 0 {
			return int(sp.Port), true
		}
		return int(tp.IntVal), true
	}
	if tp.StrVal == "" {
		return int(sp.Port), true
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
				return int(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}
