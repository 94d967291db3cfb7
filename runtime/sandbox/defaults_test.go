package sandbox

import (
	"strings"
	"testing"
)

func TestWithDefaults(t *testing.T) {
	spec := ProcessSpec{Bin: "sh", Env: []string{"A=request", "C=3"}}
	got := spec.WithDefaults([]string{"A=image", "B=2", "PATH=/image/bin"}, "/work")
	if strings.Join(got.Env, " ") != "B=2 PATH=/image/bin A=request C=3" || got.Dir != "/work" {
		t.Fatalf("%+v", got)
	}
	if spec.Env[0] != "A=request" || spec.Dir != "" {
		t.Fatal("WithDefaults changed its receiver")
	}
	own := ProcessSpec{Dir: "/mine"}.WithDefaults(nil, "/work")
	if own.Dir != "/mine" || own.Env != nil {
		t.Fatalf("%+v", own)
	}
}
