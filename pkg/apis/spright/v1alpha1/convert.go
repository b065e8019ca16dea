package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// FromUnstructured decodes a Chain read through the dynamic client.
func FromUnstructured(u *unstructured.Unstructured) (*Chain, error) {
	c := &Chain{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), c); err != nil {
		return nil, fmt.Errorf("decoding Chain %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return c, nil
}

// ToUnstructured encodes c for the dynamic client, with its kind set.
func ToUnstructured(c *Chain) (*unstructured.Unstructured, error) {
	c = c.DeepCopy()
	c.APIVersion = SchemeGroupVersion.String()
	c.Kind = Kind
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c)
	if err != nil {
		return nil, fmt.Errorf("encoding Chain %s/%s: %w", c.Namespace, c.Name, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}
