package docker

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gvpn/gvpn/test/dockerlab"
)

// TestImagesReused: with nothing changed, a second build builds nothing
// and names the same images.
func TestImagesReused(t *testing.T) {
	requireImage(t)
	dir := filepath.Dir(labBin)
	im, err := dockerlab.Build(context.Background(), docker, dockerlab.BuildConfig{BinDir: dir, Dockerfile: "../../Dockerfile"})
	if err != nil {
		t.Fatal(err)
	}
	if im.Lab != image || len(im.Built) != 0 {
		t.Errorf("second build: %+v, want %s reused and nothing built", im, image)
	}
}

// TestFailedBuildLeavesNoLayers: a lab stage that fails after a layer was
// made leaves no image behind, tagged or dangling.
func TestFailedBuildLeavesNoLayers(t *testing.T) {
	requireImage(t)
	ctx := context.Background()
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// The binaries are copied, then the build fails.
	broken := strings.Replace(string(df), `CMD ["gvpn-lab", "--help"]`, "RUN false", 1)
	if broken == string(df) {
		t.Fatal("the Dockerfile's lab stage has changed: update this test")
	}
	path := filepath.Join(t.TempDir(), "Dockerfile")
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := docker.Run(ctx, "images", "-aq", "--no-trunc")
	if err != nil {
		t.Fatal(err)
	}
	im, err := dockerlab.Build(ctx, docker, dockerlab.BuildConfig{BinDir: filepath.Dir(labBin), Dockerfile: path})
	if err == nil {
		t.Fatalf("a build whose RUN fails succeeded: %+v", im)
	}
	t.Logf("the failed build says: %v", err)
	if docker.Exists(ctx, "image", im.Lab) {
		t.Errorf("%s exists after its build failed", im.Lab)
	}
	after, _ := docker.Run(ctx, "images", "-q", "--no-trunc", "-f", "dangling=true")
	for _, id := range lines(after) {
		if !slices.Contains(lines(before), id) {
			t.Errorf("the failed build left dangling image %s", id)
		}
	}
	if !docker.Exists(ctx, "image", image) {
		t.Errorf("the failed build removed the good image %s", image)
	}
}
