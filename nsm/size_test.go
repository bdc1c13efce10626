package nsm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// lockdID is what the Linux kernel's lock manager sends in SM_MON: its
// utsname nodename as my_name, and NLM v3's private NSM_NOTIFY procedure.
var lockdID = MyID{Name: "nfs-server-01", Prog: 100021, Vers: 3, Proc: 16}

func clientName(i int) string { return fmt.Sprintf("client-%05d.cluster.example.org", i) }

// monitorAll registers hosts[i] from workers concurrent callers, the way a
// busy lock manager would, and returns how long it took.
func monitorAll(tb testing.TB, s *Store, hosts []string, workers int) time.Duration {
	tb.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(hosts) {
					return
				}
				r := Registration{MonName: hosts[i], MyID: lockdID, Registered: start}
				copy(r.Priv[:], fmt.Sprintf("priv%012d", i))
				if err := s.Monitor(context.Background(), r); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return time.Since(start)
}

func shuffledHosts(n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = clientName(i)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	rnd.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
	return hosts
}

func fileSize(tb testing.TB, path string) int64 {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Size()
}

// TestStoreBytesPerHost holds the store to the budget of issue 3: at most
// 256 bytes of file per monitored host at 100,000 hosts, registered in
// random order by concurrent callers, and still within it after a reboot
// turns every registration into an owed notification.
func TestStoreBytesPerHost(t *testing.T) {
	const hosts = 100_000
	if testing.Short() {
		t.Skip("registers 100,000 hosts")
	}
	path := filepath.Join(t.TempDir(), "statd.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := StartCore(context.Background(), s, NewCore(CoreConfig{}), "boot-1", false, time.Now()); err != nil {
		t.Fatal(err)
	}
	took := monitorAll(t, s, shuffledHosts(hosts), 64)
	regs, err := s.Registrations()
	if err != nil || len(regs) != hosts {
		t.Fatalf("Registrations: %d, %v", len(regs), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	perHost := float64(fileSize(t, path)) / hosts
	t.Logf("%d hosts: %.1f bytes/host, %.0f SM_MON/s", hosts, perHost, hosts/took.Seconds())
	if perHost > 256 {
		t.Errorf("store uses %.1f bytes per monitored host, budget is 256", perHost)
	}

	s, err = OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := StartCore(context.Background(), s, NewCore(CoreConfig{}), "boot-2", false, time.Now())
	if err != nil || res.Owed != hosts || res.Dropped != hosts {
		t.Fatalf("reboot: %+v, %v", res, err)
	}
	s.Close()
	perHost = float64(fileSize(t, path)) / hosts
	t.Logf("after reboot, %d owed: %.1f bytes/host", hosts, perHost)
	if perHost > 256 {
		t.Errorf("after reboot the store uses %.1f bytes per owed host, budget is 256", perHost)
	}
}

// BenchmarkMonitor measures durable SM_MON per second with 64 concurrent
// callers on the disk under the test's temporary directory.
func BenchmarkMonitor(b *testing.B) {
	for _, workers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", workers), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "statd.db")
			s, err := OpenStore(path)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			hosts := shuffledHosts(b.N)
			b.ResetTimer()
			took := monitorAll(b, s, hosts, workers)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/took.Seconds(), "SM_MON/s")
			var commits int
			s.db.View(func(tx *bolt.Tx) error { commits = tx.ID(); return nil })
			b.ReportMetric(float64(b.N)/float64(commits), "SM_MON/commit")
			b.ReportMetric(float64(fileSize(b, path))/float64(b.N), "bytes/host")
		})
	}
}
