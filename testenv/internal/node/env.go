package node

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Expand replaces $(NAME) with lookup(NAME) the way the kubelet does: "$$" escapes a
// dollar, and a reference to an undefined name stays as written.
func Expand(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// RefResolver reads ConfigMaps and Secrets for env valueFrom and envFrom; found is false
// when the object or key does not exist.
type RefResolver interface {
	ConfigMapKey(namespace, name, key string) (string, bool, error)
	SecretKey(namespace, name, key string) (string, bool, error)
	ConfigMapData(namespace, name string) (map[string]string, bool, error)
	SecretData(namespace, name string) (map[string]string, bool, error)
}

// envList is an ordered environment where a later definition replaces an earlier one.
type envList struct {
	names []string
	vals  map[string]string
}

func newEnvList() *envList { return &envList{vals: map[string]string{}} }

func (e *envList) set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.names = append(e.names, k)
	}
	e.vals[k] = v
}

func (e *envList) lookup(k string) (string, bool) { v, ok := e.vals[k]; return v, ok }

func (e *envList) slice() []string {
	out := make([]string, 0, len(e.names))
	for _, k := range e.names {
		out = append(out, k+"="+e.vals[k])
	}
	return out
}

// BuildEnv computes a container's environment: the node's variables (POD_IP, KUBECONFIG),
// then the image's env, then the pod spec's env and envFrom, each expanded against what
// came before it.
func BuildEnv(pod *corev1.Pod, c *corev1.Container, img ResolvedImage, base []EnvPair, refs RefResolver) ([]string, map[string]string, error) {
	e := newEnvList()
	for _, p := range base {
		e.set(p.Name, Expand(p.Value, e.lookup))
	}
	for _, p := range img.Env {
		e.set(p.Name, Expand(p.Value, e.lookup))
	}
	for _, from := range c.EnvFrom {
		if err := applyEnvFrom(pod.Namespace, from, e, refs); err != nil {
			return nil, nil, err
		}
	}
	for _, ev := range c.Env {
		if ev.ValueFrom == nil {
			e.set(ev.Name, Expand(ev.Value, e.lookup))
			continue
		}
		v, ok, err := valueFrom(pod, ev.ValueFrom, refs)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", ev.Name, err)
		}
		if ok {
			e.set(ev.Name, v)
		}
	}
	return e.slice(), e.vals, nil
}

// applyEnvFrom adds every key of a ConfigMap or Secret, with the source's prefix, in key
// order as the kubelet does; keys that are not valid variable names are skipped.
func applyEnvFrom(ns string, from corev1.EnvFromSource, e *envList, refs RefResolver) error {
	var (
		data     map[string]string
		found    bool
		err      error
		kind     string
		name     string
		optional *bool
	)
	switch {
	case from.ConfigMapRef != nil:
		kind, name, optional = "configmap", from.ConfigMapRef.Name, from.ConfigMapRef.Optional
		data, found, err = refs.ConfigMapData(ns, name)
	case from.SecretRef != nil:
		kind, name, optional = "secret", from.SecretRef.Name, from.SecretRef.Optional
		data, found, err = refs.SecretData(ns, name)
	default:
		return nil
	}
	if err != nil {
		return err
	}
	if !found {
		if optional != nil && *optional {
			return nil
		}
		return fmt.Errorf("%s %q not found", kind, name)
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if validEnvName(from.Prefix + k) {
			e.set(from.Prefix+k, data[k])
		}
	}
	return nil
}

func validEnvName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func valueFrom(pod *corev1.Pod, src *corev1.EnvVarSource, refs RefResolver) (string, bool, error) {
	switch {
	case src.FieldRef != nil:
		v, err := FieldRef(pod, src.FieldRef.FieldPath)
		return v, err == nil, err
	case src.ConfigMapKeyRef != nil:
		r := src.ConfigMapKeyRef
		v, ok, err := refs.ConfigMapKey(pod.Namespace, r.Name, r.Key)
		if err == nil && !ok && (r.Optional == nil || !*r.Optional) {
			err = fmt.Errorf("configmap %s key %s not found", r.Name, r.Key)
		}
		return v, ok, err
	case src.SecretKeyRef != nil:
		r := src.SecretKeyRef
		v, ok, err := refs.SecretKey(pod.Namespace, r.Name, r.Key)
		if err == nil && !ok && (r.Optional == nil || !*r.Optional) {
			err = fmt.Errorf("secret %s key %s not found", r.Name, r.Key)
		}
		return v, ok, err
	case src.ResourceFieldRef != nil:
		return "", false, nil
	}
	return "", false, nil
}

// FieldRef resolves the downward-API field paths the kubelet supports for env.
func FieldRef(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		ips := make([]string, 0, len(pod.Status.PodIPs))
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.hostIPs":
		return pod.Status.HostIP, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if strings.HasPrefix(path, prefix+"['") && strings.HasSuffix(path, "']") {
			return m[path[len(prefix)+2:len(path)-2]], nil
		}
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// ContainerCommand applies Kubernetes' entrypoint rules: spec.command replaces the image's
// command (and drops nothing else, since table images have no default args); spec.args are
// appended. Both are expanded with the container's environment.
func ContainerCommand(c *corev1.Container, img ResolvedImage, env map[string]string) []string {
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cmd := img.Command
	if len(c.Command) > 0 {
		cmd = c.Command
	}
	out := make([]string, 0, len(cmd)+len(c.Args))
	for _, a := range cmd {
		out = append(out, Expand(a, lookup))
	}
	for _, a := range c.Args {
		out = append(out, Expand(a, lookup))
	}
	return out
}
