package spec

import (
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	for name, want := range map[string]string{
		"jenkins": "jenkins", "/jenkins": "jenkins", "j1": "j1", "jenkins_2.lts-a": "jenkins_2.lts-a", "0ab": "0ab",
	} {
		got, err := Name(name)
		if err != nil || got != want {
			t.Errorf("Name(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	// Docker needs two characters at least, the first a letter or a digit.
	for _, name := range []string{"", "/", "j", "/j", "_jenkins", ".jenkins", "-jenkins", "jen kins", "jenkins/x", "jénkins", "//jenkins"} {
		if _, err := Name(name); err == nil {
			t.Errorf("Name(%q) accepted", name)
		}
	}
}

func TestImage(t *testing.T) {
	for _, ref := range []string{
		"jenkins/jenkins:lts-jdk21", "jenkins/jenkins", "registry.example.com:5000/ci/jenkins:2.516.3",
		"jenkins/jenkins@sha256:" + strings.Repeat("a", 64), "localhost/jenkins-double:1",
	} {
		if err := Image(ref); err != nil {
			t.Errorf("Image(%q) = %v", ref, err)
		}
	}
	for _, ref := range []string{"", "  ", "Jenkins/UPPER:x", "jenkins/jenkins:", "jenkins:tag:tag", "jenkins/jenkins@sha256:short"} {
		if err := Image(ref); err == nil {
			t.Errorf("Image(%q) accepted", ref)
		}
	}
}

func TestParsePort(t *testing.T) {
	for s, want := range map[string]Port{
		"8080":                 {ContainerPort: 8080, Proto: TCP},
		"8080:8080":            {HostPort: 8080, ContainerPort: 8080, Proto: TCP},
		"50000:50000/tcp":      {HostPort: 50000, ContainerPort: 50000, Proto: TCP},
		"127.0.0.1:80:8080":    {HostIP: "127.0.0.1", HostPort: 80, ContainerPort: 8080, Proto: TCP},
		"127.0.0.1::8080":      {HostIP: "127.0.0.1", ContainerPort: 8080, Proto: TCP},
		"[::1]:8080:8080/udp":  {HostIP: "::1", HostPort: 8080, ContainerPort: 8080, Proto: UDP},
		"[fe80::1]::9/sctp":    {HostIP: "fe80::1", ContainerPort: 9, Proto: SCTP},
		"0.0.0.0:65535:1":      {HostIP: "0.0.0.0", HostPort: 65535, ContainerPort: 1, Proto: TCP},
		"00080:08080":          {HostPort: 80, ContainerPort: 8080, Proto: TCP},
		"8080/udp":             {ContainerPort: 8080, Proto: UDP},
		"10.1.2.3:50000:50000": {HostIP: "10.1.2.3", HostPort: 50000, ContainerPort: 50000, Proto: TCP},
	} {
		got, err := ParsePort(s)
		if err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for s, why := range map[string]string{
		"":                    "empty",
		" 8080:8080":          "spaces",
		"abc":                 "not a number",
		"8080:":               "container port is missing",
		":8080":               "host port is empty",
		"70000:8080":          "between 1 and 65535",
		"8080:0":              "between 1 and 65535",
		"0:8080":              "between 1 and 65535",
		"+80:80":              "not a number",
		"8080-8090:8080-8090": "ranges",
		"8080:8080/icmp":      "protocol",
		"8080:8080/TCP":       "protocol",
		"8080:8080/":          "protocol",
		"1.2.3:8080:8080":     "IPv4",
		"::1:8080:8080":       "too many colons",
		"[::1]8080:8080":      "followed by",
		"[::1]:8080":          "host port and the container port",
		"[1.2.3.4]:80:80":     "IPv6",
		"[fe80::1%eth0]:1:1":  "IPv6",
		"80:80:80:80":         "too many colons",
		"localhost:80:80":     "IPv4",
	} {
		_, err := ParsePort(s)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "[ip:]host:container[/proto]") {
			t.Errorf("ParsePort(%q) = %v, want an error saying %q and the syntax", s, err, why)
		}
	}
}

func TestParseVolume(t *testing.T) {
	for s, want := range map[string]Volume{
		"/etc/casc.yaml:/casc.yaml:ro": {Source: "/etc/casc.yaml", Target: "/casc.yaml", ReadOnly: true},
		"/etc/x/:/x/:rw":               {Source: "/etc/x", Target: "/x"},
		"/a:/b":                        {Source: "/a", Target: "/b"},
		"/a/../b:/c/./d":               {Source: "/b", Target: "/c/d"},
	} {
		got, err := ParseVolume(s, "/var/jenkins_home")
		if err != nil || got != want {
			t.Errorf("ParseVolume(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for s, why := range map[string]string{
		"casc.yaml:/casc.yaml":      "named volumes are not supported",
		"jenkins-data:/data":        "named volumes are not supported",
		"/a:b":                      "target",
		"/a:/b:zz":                  `mode "zz"`,
		"/a":                        "src:dst",
		"/a:/b:ro:x":                "src:dst",
		"/x:/var/jenkins_home/":     "already the Jenkins home",
		"/x:/var/jenkins_home/./":   "already the Jenkins home",
		"/a\x00:/b":                 "NUL",
		"":                          "src:dst",
		"/etc/casc.yaml:casc.yaml:": `mode ""`,
	} {
		_, err := ParseVolume(s, "/var/jenkins_home")
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("ParseVolume(%q) = %v, want an error containing %q", s, err, why)
		}
	}
}

func TestEnvName(t *testing.T) {
	for _, k := range []string{"JAVA_OPTS", "CASC_JENKINS_CONFIG", "_x", "a1"} {
		if err := EnvName(k); err != nil {
			t.Errorf("EnvName(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", "1A", "A=B", "A B", "A-B", "A.B", "A\x00"} {
		if err := EnvName(k); err == nil {
			t.Errorf("EnvName(%q) accepted", k)
		}
	}
}

func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"8080:8080", "127.0.0.1::8080", "[::1]:1:2/udp", "abc", "1-2:3-4", ":", "0:0", "8080", "1.2.3.4:5:6/sctp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePort(s)
		if err != nil {
			return
		}
		if p.ContainerPort < 1 || p.ContainerPort > 65535 || p.HostPort < 0 || p.HostPort > 65535 {
			t.Fatalf("ParsePort(%q) = %+v: a port out of range", s, p)
		}
		// What ParsePort accepts, it reads again the same from its String.
		again, err := ParsePort(p.String())
		if err != nil || again != p {
			t.Fatalf("ParsePort(%q) = %+v, but its String %q parses to %+v, %v", s, p, p.String(), again, err)
		}
	})
}

func FuzzParseVolume(f *testing.F) {
	for _, s := range []string{"/a:/b", "/a:/b:ro", "/a:/b:rw", "a:/b", "/a", "/a:/b:c:d", "", ":::", "/a/../b:/c/./d:ro"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		m, err := ParseVolume(v, "/var/jenkins_home")
		if err != nil {
			return
		}
		// What ParseVolume accepts, it accepts again in normalised form.
		again, err := ParseVolume(m.String(), "/var/jenkins_home")
		if err != nil || again != m {
			t.Fatalf("ParseVolume(%q) = %+v, but its String %q parses to %+v, %v", v, m, m.String(), again, err)
		}
	})
}
