package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gvpn/gvpn/test/privtest"
)

// providerUID is a provider's own user in TestNonRootProvider: in no
// passwd file, and not nobody, so that the payload user it gets is
// visibly the runtime's own and not the root install's default.
const providerUID = 64123

// TestNonRootProvider installs the runtime the documented way (the
// Makefile's install-provider: root:<provider group>, mode 0750, the file
// capabilities) and runs it as a provider's unprivileged user: `test` with
// exactly the shipped descriptor's runtime arguments passes, its payloads
// run as that user and the line says so; a user outside the group cannot
// execute it at all; and what the caller names is used only if the caller
// could use it itself: a workdir of another user and a task package it
// cannot read are refused, naming the flag, before anything is written, and
// links planted in its own workdir do not lead the runtime's writes out of it.
func TestNonRootProvider(t *testing.T) {
	privtest.RequireRoot(t)
	for _, c := range []string{"setcap", "getcap", "make"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (make deps installs libcap2-bin)", c)
		}
	}
	ctx := privtest.Context(t, 60*time.Second)
	plugins := t.TempDir()
	for _, d := range []string{filepath.Dir(plugins), plugins} { // the provider user must reach the binary
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	gid := strconv.Itoa(providerUID)
	mk := exec.CommandContext(ctx, "make", "-s", "-C", "../..", "install-provider",
		"PLUGINS="+plugins, "PROVIDER_GROUP="+gid, "RUNTIME_BIN="+runtimeBin)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make install-provider: %v\n%s", err, out)
	}
	bin := filepath.Join(plugins, "gvpn", "gvpn-runtime")
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o750 || st.Uid != 0 || st.Gid != providerUID {
		t.Errorf("installed %v uid %d gid %d; want -rwxr-x--- root:%d, so that only the provider's group runs the capable binary",
			fi.Mode().Perm(), st.Uid, st.Gid, providerUID)
	}
	caps, err := exec.Command("getcap", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cap_net_admin", "cap_sys_admin", "cap_sys_chroot", "cap_dac_override", "=ep"} {
		if !strings.Contains(string(caps), c) {
			t.Errorf("getcap %s: %q lacks %s", bin, caps, c)
		}
	}
	if _, err := os.Stat(filepath.Join(plugins, "ya-runtime-gvpn.json")); err != nil {
		t.Errorf("the descriptor is not installed: %v", err)
	}

	asUser := func(uid int, args ...string) (code int, stderr string, err error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
		var e bytes.Buffer
		cmd.Stderr = &e
		err = cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0, e.String(), nil
		case errors.As(err, &exit):
			return exit.ExitCode(), e.String(), nil
		}
		return -1, e.String(), err
	}

	// Another local user cannot execute it at all.
	if _, _, err := asUser(65534, "--version"); !errors.Is(err, os.ErrPermission) {
		t.Errorf("nobody, not in the provider's group, ran the capable binary (err %v); want permission denied", err)
	}

	// What ya-provider runs at start-up: the descriptor's own arguments.
	args := append(descriptorRuntimeArgs(t), "test")
	code, out, err := asUser(providerUID, args...)
	if err != nil || code != 0 || !strings.Contains(out, "checks passed") {
		t.Fatalf("gvpn-runtime %q as uid %d: exit %d, %v\n%s", args, providerUID, code, err, out)
	}
	if want := "payloads run as the runtime's own user (uid 64123 gid 64123)"; !strings.Contains(out, want) || !strings.Contains(out, "sharing the provider user's uid") {
		t.Errorf("test does not say that payloads share the provider's user (want %q):\n%s", want, out)
	}

	// A payload user it cannot switch to is an error naming the flag.
	code, out, _ = asUser(providerUID, "--sandbox-prefix", testPrefix, "--payload-user", "nobody", "test")
	if code == 0 || !strings.Contains(out, "FAIL payload user: --payload-user \"nobody\"") || !strings.Contains(out, "to fix:") {
		t.Errorf("--payload-user nobody as uid %d: exit %d; want a FAIL line naming the flag and the fix:\n%s", providerUID, code, out)
	}

	// Without the capabilities, test names the failed check and the fix, and
	// says what a failing test does to the provider.
	plain := filepath.Join(plugins, "gvpn-runtime-plain")
	b, err := os.ReadFile(runtimeBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plain, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, plain, "--sandbox-prefix", testPrefix, "test")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: providerUID, Gid: providerUID, Groups: []uint32{}}}
	failed, _ := cmd.CombinedOutput()
	for _, want := range []string{"FAIL privileges (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_CHROOT, CAP_DAC_OVERRIDE): missing CAP_NET_ADMIN",
		"to fix: run the provider as root, or give the binary file capabilities", "ya-provider stops every runtime"} {
		if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(string(failed), want) {
			t.Errorf("test without capabilities: exit %d, output lacks %q:\n%s", cmd.ProcessState.ExitCode(), want, failed)
		}
	}

	// Paths: a workdir of someone else (root's, though writable by all), a
	// task package the caller cannot read, then its own workdir.
	foreign := filepath.Join(plugins, "root-activity")
	if err := os.Mkdir(foreign, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(foreign, 0o777); err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(plugins, "activity")
	if err := os.Mkdir(own, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(own, providerUID, providerUID); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(plugins, "root-only.gvmi")
	if err := os.WriteFile(secret, []byte("not yours"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--workdir", foreign, "deploy", "--"}, "--workdir " + foreign + " belongs to uid 0, not to the calling user (uid 64123)"},
		{[]string{"--workdir", own, "--task-package", secret, "deploy", "--"}, "--task-package " + secret + ": the calling user (uid 64123) cannot read it"},
		{[]string{"--workdir", own, "--sandbox", "agent", "--bridge", "unix://" + foreign + "x/b.sock", "deploy", "--"}, "--bridge"},
	} {
		code, out, err := asUser(providerUID, append([]string{"--sandbox-prefix", testPrefix}, c.args...)...)
		if err != nil || code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%q as uid %d: exit %d, %v, stderr %q; want exit 2 and %q", c.args, providerUID, code, err, out, c.want)
		}
	}
	if left, _ := os.ReadDir(foreign); len(left) > 0 {
		t.Errorf("the refused deploy wrote into another user's workdir: %v", left)
	}

	// Links the caller plants in its own workdir lead nowhere: the runtime
	// does not write its files through them with CAP_DAC_OVERRIDE.
	rootDir := filepath.Join(plugins, "root-dir")
	if err := os.Mkdir(rootDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"gvpn-deployment.json": secret, "logs": rootDir} {
		if err := os.Symlink(target, filepath.Join(own, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(own, name), providerUID, providerUID); err != nil {
			t.Fatal(err)
		}
	}
	if code, out, err := asUser(providerUID, "--sandbox-prefix", testPrefix, "--workdir", own, "deploy", "--"); err != nil || code == 0 {
		t.Errorf("deploy with gvpn-deployment.json linked to a root-only file: exit %d, %v, %s; want a failure", code, err, out)
	}
	if b, _ := os.ReadFile(secret); string(b) != "not yours" {
		t.Errorf("the runtime wrote through a link in the workdir into a root-only file: %q", b)
	}
	if left, _ := os.ReadDir(rootDir); len(left) > 0 {
		t.Errorf("the runtime logged through a link in the workdir into a root-only directory: %v", left)
	}
	for _, name := range []string{"gvpn-deployment.json", "logs"} {
		if err := os.Remove(filepath.Join(own, name)); err != nil {
			t.Fatal(err)
		}
	}
	if code, out, err := asUser(providerUID, "--sandbox-prefix", testPrefix, "--workdir", own, "deploy", "--"); err != nil || code != 0 {
		t.Errorf("deploy in the provider's own workdir: exit %d, %v\n%s", code, err, out)
	}
}

// descriptorRuntimeArgs are the runtime flags the shipped descriptor
// passes (its --runtime-arg= extra-args; the rest are the ExeUnit's own).
func descriptorRuntimeArgs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/ya-runtime-gvpn.json")
	if err != nil {
		t.Fatal(err)
	}
	var descs []struct {
		ExtraArgs []string `json:"extra-args"`
	}
	if err := json.Unmarshal(b, &descs); err != nil || len(descs) != 1 {
		t.Fatalf("docs/ya-runtime-gvpn.json: %v (%d descriptors)", err, len(descs))
	}
	args := []string{}
	for _, a := range descs[0].ExtraArgs {
		if v, ok := strings.CutPrefix(a, "--runtime-arg="); ok {
			args = append(args, v)
		}
	}
	return args
}
