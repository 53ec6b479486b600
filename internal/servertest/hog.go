package servertest

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Hogs are CPU-bound child processes (a shell spinning in `while :; do :; done`), one core's
// worth each, competing with everything else on the machine at normal priority. They die with
// the process that started them (PR_SET_PDEATHSIG) even if it is SIGKILLed.
type Hogs struct {
	cmds   []*exec.Cmd
	exited []chan struct{}
}

// hogStopTimeout bounds the wait for a killed hog.
const hogStopTimeout = 10 * time.Second

// Hog starts n hogs for t, stopped when t ends.
func Hog(t testing.TB, n int) *Hogs {
	t.Helper()
	h, err := StartHogs(n)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Errorf("servertest: %v", err)
		}
	})
	return h
}

// StartHogs starts n hogs; Stop them when done.
func StartHogs(n int) (*Hogs, error) {
	h := &Hogs{}
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, errors.Join(fmt.Errorf("start CPU hog: %w", err), h.Stop())
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		h.cmds = append(h.cmds, cmd)
		h.exited = append(h.exited, exited)
	}
	return h, nil
}

// PIDs are the hogs' process ids.
func (h *Hogs) PIDs() []int {
	out := make([]int, len(h.cmds))
	for i, c := range h.cmds {
		out[i] = c.Process.Pid
	}
	return out
}

// CPUTime is the CPU the hogs have used so far (proof that they ran).
func (h *Hogs) CPUTime() time.Duration {
	var total time.Duration
	for _, pid := range h.PIDs() {
		if d, err := procCPU(pid); err == nil {
			total += d
		}
	}
	return total
}

// Stop kills the hogs and waits for them. Safe to call twice.
func (h *Hogs) Stop() error {
	var errs []error
	for i, c := range h.cmds {
		_ = c.Process.Kill()
		select {
		case <-h.exited[i]:
		case <-time.After(hogStopTimeout):
			errs = append(errs, fmt.Errorf("CPU hog %d did not exit within %s", c.Process.Pid, hogStopTimeout))
		}
	}
	return errors.Join(errs...)
}
