package node

import (
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// ImageTable maps container images to local commands; see testenv/images.yaml.
type ImageTable struct {
	Images []ImageRule `json:"images"`
}

// ImageRule runs Command (relative paths resolve against the repository root) for any tag
// of Repository. Env values may use $(POD_IP), $(IMAGE_TAG) and the pod's own variables.
type ImageRule struct {
	Repository string    `json:"repository"`
	Command    []string  `json:"command"`
	Env        []EnvPair `json:"env"`
}

// EnvPair keeps the table's env ordered, so later entries can refer to earlier ones.
type EnvPair struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ResolvedImage is what an image pulls to: the entrypoint and the image's own env.
type ResolvedImage struct {
	Command []string
	Env     []EnvPair
	Tag     string
}

// LoadImageTable reads the table from a YAML file.
func LoadImageTable(path string) (*ImageTable, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t ImageTable
	if err := yaml.UnmarshalStrict(b, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, r := range t.Images {
		if r.Repository == "" || len(r.Command) == 0 {
			return nil, fmt.Errorf("%s: images[%d] needs repository and command", path, i)
		}
	}
	return &t, nil
}

// SplitImage splits "registry/repo:tag@digest" into repository and tag ("latest" when absent).
func SplitImage(image string) (repo, tag string) {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	repo, tag = image, "latest"
	// A colon after the last slash separates the tag; one before it belongs to a registry port.
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		repo, tag = image[:i], image[i+1:]
	}
	return repo, tag
}

// Resolve finds the rule for an image. A registry or path prefix is ignored so that
// "ghcr.io/acme/shortener:v2" and "shortener:v2" map alike.
func (t *ImageTable) Resolve(image string) (ResolvedImage, error) {
	repo, tag := SplitImage(image)
	for _, r := range t.Images {
		if repo == r.Repository || strings.HasSuffix(repo, "/"+r.Repository) {
			env := append([]EnvPair{{Name: "IMAGE_TAG", Value: tag}}, r.Env...)
			return ResolvedImage{Command: append([]string(nil), r.Command...), Env: env, Tag: tag}, nil
		}
	}
	return ResolvedImage{}, fmt.Errorf("image %q is not in testenv/images.yaml (testenv pulls nothing from a registry)", image)
}
