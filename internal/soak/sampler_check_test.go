package soak

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/container/containertest"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/testenv"
)

// TestSamplerSeesTwoJenkins runs the Jenkins double twice, as plain processes of the
// agent binary tagged like a cycle's containers: the sampler must report two Jenkins
// alive at once, and a home on another device than the EFS stand-in; with one, neither.
func TestSamplerSeesTwoJenkins(t *testing.T) {
	testenv.SkipShort(t, "runs the static agent binary")
	bin := containertest.AgentBinary(t, "../../cmd/jenkins-spot-agent")
	run := testenv.RandomSuffix(t)
	home := t.TempDir()
	var st syscall.Stat_t
	if err := syscall.Stat(home, &st); err != nil {
		t.Fatal(err)
	}
	dev := strconv.FormatUint(st.Dev, 10)
	double := func(node string) *exec.Cmd {
		cmd := exec.Command(bin, "jenkins-double", "--listen", "127.0.0.1:0", "--home", t.TempDir(), "--user", "admin", "--token", "t")
		cmd.Env = append(os.Environ(), envRun+"="+run, envCycle+"=7", envNode+"="+node)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	seen := func(want int, homeDev string) samples {
		s := startSampler(run, "7", homeDev, home)
		deadline := time.Now().Add(testenv.WaitLimit)
		for {
			time.Sleep(2 * sampleEvery)
			s.mu.Lock()
			max := s.rep.Max
			s.mu.Unlock()
			if max >= want || time.Now().After(deadline) {
				return s.stop()
			}
		}
	}

	a := double("A")
	one := seen(1, dev)
	if one.Max != 1 || one.Both != "" || one.Elsewhere != "" {
		t.Errorf("one Jenkins on the home: %+v", one)
	}
	// A home the sampler is not told is the EFS stand-in: the process runs elsewhere.
	if away := seen(1, "0"); away.Elsewhere == "" {
		t.Errorf("a Jenkins whose home is on device %s, not 0, was not reported: %+v", dev, away)
	}
	double("B")
	two := seen(2, dev)
	if two.Max != 2 || two.Both == "" {
		t.Errorf("two Jenkins alive at once not reported: %+v", two)
	}
	t.Logf("reported: %s", two.Both)
	_ = a.Process.Kill()
	_ = a.Wait()
	if after := seen(1, dev); after.Both != "" || after.Max != 1 {
		t.Errorf("after A's Jenkins ended: %+v", after)
	}
}
