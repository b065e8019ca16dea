package v1alpha1

import "k8s.io/apimachinery/pkg/runtime"

// DeepCopyInto copies c into out.
func (c *Chain) DeepCopyInto(out *Chain) {
	*out = *c
	out.TypeMeta = c.TypeMeta
	c.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	c.Spec.DeepCopyInto(&out.Spec)
	c.Status.DeepCopyInto(&out.Status)
}

// DeepCopy returns a copy of c.
func (c *Chain) DeepCopy() *Chain {
	if c == nil {
		return nil
	}
	out := new(Chain)
	c.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (c *Chain) DeepCopyObject() runtime.Object { return c.DeepCopy() }

// DeepCopyInto copies s into out.
func (s *ChainSpec) DeepCopyInto(out *ChainSpec) {
	*out = *s
	if s.Functions != nil {
		out.Functions = make([]ChainFunction, len(s.Functions))
		for i := range s.Functions {
			out.Functions[i] = s.Functions[i]
			out.Functions[i].Revisions = append([]string(nil), s.Functions[i].Revisions...)
			if s.Functions[i].Routed != nil {
				out.Functions[i].Routed = append([]string(nil), s.Functions[i].Routed...)
			}
		}
	}
	if s.Routes != nil {
		out.Routes = make([]ChainRoute, len(s.Routes))
		for i := range s.Routes {
			out.Routes[i] = s.Routes[i]
			out.Routes[i].To = append([]string(nil), s.Routes[i].To...)
		}
	}
}

// DeepCopyInto copies s into out.
func (s *ChainStatus) DeepCopyInto(out *ChainStatus) {
	*out = *s
	s.Status.DeepCopyInto(&out.Status)
	if s.URL != nil {
		out.URL = s.URL.DeepCopy()
	}
}

// DeepCopyInto copies l into out.
func (l *ChainList) DeepCopyInto(out *ChainList) {
	*out = *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]Chain, len(l.Items))
		for i := range l.Items {
			l.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopyObject implements runtime.Object.
func (l *ChainList) DeepCopyObject() runtime.Object {
	if l == nil {
		return nil
	}
	out := new(ChainList)
	l.DeepCopyInto(out)
	return out
}

// DeepCopy returns a copy of s.
func (s *ChainStatus) DeepCopy() *ChainStatus {
	if s == nil {
		return nil
	}
	out := new(ChainStatus)
	s.DeepCopyInto(out)
	return out
}

// DeepCopy returns a copy of s.
func (s *ChainSpec) DeepCopy() *ChainSpec {
	if s == nil {
		return nil
	}
	out := new(ChainSpec)
	s.DeepCopyInto(out)
	return out
}
