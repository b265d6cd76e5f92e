package efs

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
)

const (
	testAZName       = "us-east-1a.fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"
	testRegionalName = "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"
)

// hostTable is the head of a real mountinfo; tests append the lines they need.
const hostTable = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683656k
`

func nfsLine(id, parent int, mountPoint, source string) string {
	return fmt.Sprintf("%d %d 0:%d / %s rw,relatime shared:%d - nfs4 %s rw,vers=4.1,rsize=1048576,wsize=1048576,hard,proto=tcp,timeo=600,retrans=2,sec=sys,noresvport\n",
		id, parent, id, mountPoint, id, source)
}

func parseTable(t testing.TB, text string) []*mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMountsFromReader(strings.NewReader(text), nil)
	if err != nil {
		t.Fatalf("parse mountinfo: %v", err)
	}
	return infos
}

func TestCheckMountTable(t *testing.T) {
	nfs4 := expectation{mountPoint: "/jenkins_home", fsTypes: []string{"nfs4"}, fileSystemID: testFS, dnsName: testAZName}
	withSpace := nfs4
	withSpace.mountPoint = "/srv/jenkins home"

	tests := []struct {
		name       string
		table      string
		exp        expectation
		wantID     int // entry judged; 0 for none
		wantErr    []string
		notMounted bool
	}{
		{name: "az name", table: nfsLine(100, 27, "/jenkins_home", testAZName+":/"), exp: nfs4, wantID: 100},
		{name: "regional name of the same file system", table: nfsLine(100, 27, "/jenkins_home", testRegionalName+":/"), exp: nfs4, wantID: 100},
		{name: "another zone's name of the same file system", table: nfsLine(100, 27, "/jenkins_home", "us-east-1b."+testRegionalName+":/"), exp: nfs4, wantID: 100},
		{name: "name in capitals with a trailing dot", table: nfsLine(100, 27, "/jenkins_home", strings.ToUpper(testAZName)+".:/"), exp: nfs4, wantID: 100},
		{name: "escaped space in mount point", table: nfsLine(100, 27, `/srv/jenkins\040home`, testAZName+":/"), exp: withSpace, wantID: 100},
		// Addresses pass the table check; the marker decides (see TestVerify).
		{name: "efs-utils tunnel address", table: nfsLine(100, 27, "/jenkins_home", "127.0.0.1:/"), exp: nfs4, wantID: 100},
		{name: "mount target address", table: nfsLine(100, 27, "/jenkins_home", "10.0.1.23:/"), exp: nfs4, wantID: 100},
		{name: "mount target IPv6 address", table: nfsLine(100, 27, "/jenkins_home", "[fd00:ec2::23]:/"), exp: nfs4, wantID: 100},
		{
			name: "not an address", table: nfsLine(100, 27, "/jenkins_home", "10.0.1.300:/"), exp: nfs4, wantID: 100,
			wantErr: []string{`"10.0.1.300:/"`, testAZName + ":/", "unmount it"},
		},
		{name: "IPv4 in brackets", table: nfsLine(100, 27, "/jenkins_home", "[10.0.1.23]:/"), exp: nfs4, wantID: 100, wantErr: []string{"is mounted from"}},
		{name: "address with a path", table: nfsLine(100, 27, "/jenkins_home", "10.0.1.23:/jenkins"), exp: nfs4, wantID: 100, wantErr: []string{"is mounted from"}},
		{name: "nothing mounted", table: "", exp: nfs4, notMounted: true, wantErr: []string{"nothing is mounted at /jenkins_home", "plain directory"}},
		{name: "only a sub-directory mounted", table: nfsLine(100, 27, "/jenkins_home/sub", testAZName+":/"), exp: nfs4, notMounted: true, wantErr: []string{"nothing is mounted"}},
		{
			name: "another file system", table: nfsLine(100, 27, "/jenkins_home", "fs-12345678.efs.us-east-1.amazonaws.com:/"), exp: nfs4, wantID: 100,
			wantErr: []string{"fs-12345678.efs.us-east-1.amazonaws.com:/", "expected " + testAZName + ":/"},
		},
		{name: "sub-directory of the file system", table: nfsLine(100, 27, "/jenkins_home", testAZName+":/jenkins"), exp: nfs4, wantID: 100, wantErr: []string{"is mounted from"}},
		{name: "other NFS server", table: nfsLine(100, 27, "/jenkins_home", "nas.example.com:/"), exp: nfs4, wantID: 100, wantErr: []string{"nas.example.com"}},
		{name: "id only as a later label", table: nfsLine(100, 27, "/jenkins_home", "x.y."+testRegionalName+":/"), exp: nfs4, wantID: 100, wantErr: []string{"is mounted from"}},
		{name: "id without a region", table: nfsLine(100, 27, "/jenkins_home", testFS+".efs.com:/"), exp: nfs4, wantID: 100, wantErr: []string{"is mounted from"}},
		{
			name:    "wrong type",
			table:   "100 27 0:50 / /jenkins_home rw - tmpfs " + testAZName + ":/ rw,size=8192k\n",
			exp:     nfs4,
			wantID:  100,
			wantErr: []string{"is a tmpfs file system", "expected type nfs4", "efs.expect_fstypes"},
		},
		{
			name:   "stacked: the top mount counts",
			table:  "100 27 0:50 / /jenkins_home rw - ext4 /dev/xvdf rw\n" + nfsLine(101, 100, "/jenkins_home", testAZName+":/"),
			exp:    nfs4,
			wantID: 101,
		},
		{
			name:    "stacked: a disk over the file system is refused",
			table:   nfsLine(100, 27, "/jenkins_home", testAZName+":/") + "101 100 0:50 / /jenkins_home rw - ext4 /dev/xvdf rw\n",
			exp:     nfs4,
			wantID:  101,
			wantErr: []string{"ext4"},
		},
		{
			// Listed out of order: the parent link decides, not the position.
			name:   "stacked, listed top first",
			table:  nfsLine(101, 100, "/jenkins_home", testAZName+":/") + "100 27 0:50 / /jenkins_home rw - ext4 /dev/xvdf rw\n",
			exp:    nfs4,
			wantID: 101,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkMountTable(parseTable(t, hostTable+tt.table), tt.exp)
			if tt.wantID == 0 && got != nil {
				t.Errorf("judged entry %d, want none", got.ID)
			}
			if tt.wantID != 0 && (got == nil || got.ID != tt.wantID) {
				t.Errorf("judged %+v, want entry %d", got, tt.wantID)
			}
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("checkMountTable: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkMountTable passed, want error with %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			var nm errNotMounted
			if isNM := asNotMounted(err, &nm); isNM != tt.notMounted {
				t.Errorf("not-mounted error = %v, want %v", isNM, tt.notMounted)
			}
		})
	}
}

func asNotMounted(err error, target *errNotMounted) bool {
	nm, ok := err.(errNotMounted)
	if ok {
		*target = nm
	}
	return ok
}

// FuzzCheckMountTable feeds arbitrary mountinfo text and checks that an accepted entry
// really is at the mount point, of an expected type, from an accepted source.
func FuzzCheckMountTable(f *testing.F) {
	f.Add(hostTable+nfsLine(100, 27, "/jenkins_home", testAZName+":/"), "/jenkins_home", false)
	f.Add(nfsLine(100, 27, "/jenkins_home", "127.0.0.1:/"), "/jenkins_home", true)
	f.Add(nfsLine(100, 27, "/jenkins_home", "[fd00::1]:/"), "/jenkins_home", true)
	f.Add("100 27 0:50 / /jenkins_home rw - ext4 /dev/xvdf rw\n"+nfsLine(101, 100, "/jenkins_home", testRegionalName+":/"), "/jenkins_home", false)
	f.Add(nfsLine(100, 100, "/jenkins_home", testAZName+":/"), "/jenkins_home", false)
	f.Fuzz(func(t *testing.T, table, mountPoint string, _ bool) {
		infos, err := mountinfo.GetMountsFromReader(strings.NewReader(table), nil)
		if err != nil {
			return
		}
		exp := expectation{mountPoint: mountPoint, fsTypes: []string{"nfs4"}, fileSystemID: testFS, dnsName: testAZName}
		got, err := checkMountTable(infos, exp)
		if got != nil && got.Mountpoint != mountPoint {
			t.Fatalf("judged an entry at %q, not at %q", got.Mountpoint, mountPoint)
		}
		if err != nil {
			return
		}
		if got == nil || got.FSType != "nfs4" || !strings.HasSuffix(got.Source, ":/") {
			t.Fatalf("accepted %+v", got)
		}
		host := strings.Trim(strings.TrimSuffix(got.Source, ":/"), "[]")
		if _, perr := netip.ParseAddr(host); perr != nil && !strings.Contains(strings.ToLower(got.Source), testFS) {
			t.Fatalf("accepted source %q that neither names %s nor is an address", got.Source, testFS)
		}
	})
}

func TestClassifySource(t *testing.T) {
	exp := expectation{fileSystemID: testFS, dnsName: "jenkins-home.corp.example"}
	for source, want := range map[string]sourceKind{
		"jenkins-home.corp.example:/":     sourceName,
		testAZName + ":/":                 sourceName,
		testRegionalName + ":/":           sourceName,
		"127.0.0.1:/":                     sourceAddress,
		"10.0.1.23:/":                     sourceAddress,
		"[fd00::23]:/":                    sourceAddress,
		"[::ffff:10.0.1.23]:/":            sourceAddress,
		"fd00::23:/":                      sourceForeign, // IPv6 without brackets is not how NFS shows it
		"[10.0.1.23]:/":                   sourceForeign,
		"10.0.1.23:/sub":                  sourceForeign,
		"10.0.1.23":                       sourceForeign,
		testFS + ":/":                     sourceForeign, // amazon-efs-utils never leaves the bare id
		"fs-12345678.efs.x.amazonaws.com": sourceForeign,
		"nas.example.com:/":               sourceForeign,
		":/":                              sourceForeign,
	} {
		if got := classifySource(source, exp); got != want {
			t.Errorf("classifySource(%q) = %d, want %d", source, got, want)
		}
	}
}

func BenchmarkCheckMountTable(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(hostTable)
	for i := range 60 {
		fmt.Fprintf(&sb, "%d 27 0:%d / /var/lib/docker/overlay2/%d/merged rw - overlay overlay rw\n", 200+i, 200+i, i)
	}
	sb.WriteString(nfsLine(100, 27, "/jenkins_home", testAZName+":/"))
	text := sb.String()
	exp := expectation{mountPoint: "/jenkins_home", fsTypes: []string{"nfs4"}, fileSystemID: testFS, dnsName: testAZName}
	b.ReportAllocs()
	for b.Loop() {
		infos, err := mountinfo.GetMountsFromReader(strings.NewReader(text), nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := checkMountTable(infos, exp); err != nil {
			b.Fatal(err)
		}
	}
}
