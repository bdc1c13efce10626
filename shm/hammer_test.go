package shm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	hammerNodes = 16
	hammerCPUs  = 8
	hammerNets  = 4
)

// hammerWriter puts counter samples round robin over the hammer nodes at
// full speed until stop is closed; counters only grow per node.
func hammerWriter(w *Writer, stop <-chan struct{}) (uint64, error) {
	var c uint64
	for {
		select {
		case <-stop:
			return c, nil
		default:
		}
		for range 64 {
			c++
			if err := putCounter(w, int(c%hammerNodes), c, hammerCPUs, hammerNets); err != nil {
				return c, err
			}
		}
	}
}

// hammerRead reads the hammer nodes until deadline, checking every record
// is one consistent sample (or repaired: cleared by a writer that took
// over from a killed one) and that no node goes back in time. It returns
// the number of good reads.
func hammerRead(r *Reader, until time.Time) (int, error) {
	var rec Record
	last := make([]uint64, hammerNodes)
	reads := 0
	for i := 0; time.Now().Before(until); i++ {
		n := i % hammerNodes
		if i%3 == 0 {
			s, ok, err := r.Summary(n)
			if err != nil {
				return reads, err
			}
			if !ok || s.Repaired {
				continue
			}
			c := s.Memory.Total
			if s.Node != n || s.Memory.SwapFree != c+7 || s.Load.Running != uint32(c) || s.Total.Steal != c+4 ||
				!s.LastSeen.Equal(base.Add(time.Duration(c)*time.Second)) || s.CPUs != hammerCPUs || s.NetDevs != hammerNets ||
				s.Addr != addrOf(n) || c%hammerNodes != uint64(n) {
				return reads, fmt.Errorf("torn summary of node %d: %+v", n, s)
			}
			if c < last[n] {
				return reads, fmt.Errorf("node %d went back from counter %d to %d", n, last[n], c)
			}
			last[n] = c
		} else {
			ok, err := r.Read(n, &rec)
			if err != nil {
				return reads, err
			}
			if !ok || rec.Repaired {
				continue
			}
			if err := checkCounter(&rec, hammerCPUs, hammerNets); err != nil {
				return reads, fmt.Errorf("torn record of node %d: %v", n, err)
			}
			if c := rec.Sample.Memory.Total; rec.Node != n || rec.Addr != addrOf(n) || c%hammerNodes != uint64(n) || c < last[n] {
				return reads, fmt.Errorf("torn record of node %d: node %d addr %v counter %d (last %d)", n, rec.Node, rec.Addr, c, last[n])
			} else {
				last[n] = c
			}
		}
		reads++
	}
	return reads, nil
}

// startHammer lays out the hammer nodes in a table in dir and starts a
// writer updating them at full speed; stop ends it and returns its count
// of writes and its error. The test's end stops it too.
func startHammer(t *testing.T, dir string) (stop func() (uint64, error)) {
	w := create(t, dir, WriterOptions{InitialNodes: hammerNodes})
	t.Cleanup(func() { w.Close() })
	for n := range hammerNodes {
		putCounter(w, n, uint64(n), hammerCPUs, hammerNets)
	}
	quit := make(chan struct{})
	var writes uint64
	var err error
	var wg sync.WaitGroup
	wg.Go(func() { writes, err = hammerWriter(w, quit) })
	stop = sync.OnceValues(func() (uint64, error) {
		close(quit)
		wg.Wait()
		return writes, err
	})
	t.Cleanup(func() { stop() })
	return stop
}

func hammerDuration() time.Duration {
	if testing.Short() {
		return 300 * time.Millisecond
	}
	return time.Second
}

// The writer updates at full speed while several readers check every
// record: zero torn records.
func TestHammer(t *testing.T) {
	dir := t.TempDir()
	stop := startHammer(t, dir)
	until := time.Now().Add(hammerDuration())
	var total atomic.Int64
	var rwg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		r := openReader(t, dir)
		rwg.Go(func() {
			n, err := hammerRead(r, until)
			total.Add(int64(n))
			errs <- err
		})
	}
	rwg.Wait()
	writes, werr := stop()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if werr != nil {
		t.Fatal(werr)
	}
	t.Logf("%d writes, %d consistent reads", writes, total.Load())
	if total.Load() < 100 || writes < 100 {
		t.Errorf("too little work to mean anything: %d writes, %d reads", writes, total.Load())
	}
}

const (
	envHammerDir = "HOSTSTAT_SHM_HAMMER_DIR"
	envHammerFor = "HOSTSTAT_SHM_HAMMER_FOR"
	envWriterDir = "HOSTSTAT_SHM_WRITER_DIR"
)

// TestHammerChild is the reader process of TestHammerCrossProcess; it
// does nothing when run on its own.
func TestHammerChild(t *testing.T) {
	dir := os.Getenv(envHammerDir)
	if dir == "" {
		t.Skip("helper process for TestHammerCrossProcess")
	}
	d, _ := time.ParseDuration(os.Getenv(envHammerFor))
	r, err := OpenReader(dir)
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	n, err := hammerRead(r, time.Now().Add(d))
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("READS", n)
}

// The same hammer with the readers in other processes, so the seqlock is
// tested over a real shared mapping between address spaces.
func TestHammerCrossProcess(t *testing.T) {
	dir := t.TempDir()
	stop := startHammer(t, dir)

	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHammerChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envHammerDir+"="+dir, envHammerFor+"="+hammerDuration().String())
		out := new(strings.Builder)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	for i, cmd := range cmds {
		err := cmd.Wait()
		out := outs[i].String()
		if err != nil || !strings.Contains(out, "READS ") {
			t.Errorf("reader process %d: %v\n%s", i, err, out)
			continue
		}
		var n int
		fmt.Sscanf(out[strings.Index(out, "READS "):], "READS %d", &n)
		t.Logf("reader process %d: %d consistent reads", i, n)
		if n < 100 {
			t.Errorf("reader process %d read only %d records", i, n)
		}
	}
	writes, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes", writes)
}

// TestWriterChild is the writer process of TestKilledWriterProcess.
func TestWriterChild(t *testing.T) {
	dir := os.Getenv(envWriterDir)
	if dir == "" {
		t.Skip("helper process for TestKilledWriterProcess")
	}
	w, err := Create(dir, WriterOptions{InitialNodes: hammerNodes, Logger: quiet})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	for n := range hammerNodes {
		putCounter(w, n, uint64(n), hammerCPUs, hammerNets)
	}
	fmt.Println("READY")
	hammerWriter(w, nil) // until killed
}

// A writer process killed with SIGKILL at full speed: readers keep
// working, and a new writer takes the table over in place.
func TestKilledWriterProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriterChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envWriterDir+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "READY\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("writer process: %q", line)
	}
	r := openReader(t, dir)
	if pid := r.Info().WriterPID; pid != cmd.Process.Pid {
		t.Errorf("WriterPID = %d, want %d", pid, cmd.Process.Pid)
	}
	if _, err := hammerRead(r, time.Now().Add(200*time.Millisecond)); err != nil {
		t.Error(err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	// Every record is readable, or (if the kill hit mid-write) reported
	// stuck, never torn.
	var rec Record
	for n := range hammerNodes {
		ok, err := r.Read(n, &rec)
		switch {
		case errors.Is(err, ErrWriterStuck):
			t.Logf("node %d was being written when the writer died", n)
		case err != nil || !ok:
			t.Errorf("node %d after kill: %v %v", n, ok, err)
		default:
			if err := checkCounter(&rec, hammerCPUs, hammerNets); err != nil {
				t.Errorf("node %d after kill: %v", n, err)
			}
		}
	}
	gen := r.Info().Generation
	w := create(t, dir, WriterOptions{InitialNodes: hammerNodes})
	defer w.Close()
	if got := len(w.Nodes()); got != hammerNodes {
		t.Errorf("new writer kept %d assignments, want %d", got, hammerNodes)
	}
	for _, a := range w.Nodes() {
		if a.Addr != addrOf(a.Node) {
			t.Errorf("assignment %v lost its address", a)
		}
	}
	if r.Info().Generation != gen {
		t.Error("table was replaced, not reused")
	}
	for n := range hammerNodes {
		if s, ok, err := r.Summary(n); !ok || err != nil || (!s.Repaired && s.Memory.SwapFree != s.Memory.Total+7) {
			t.Errorf("node %d after takeover: %+v %v %v", n, s, ok, err)
		}
	}
	if _, err := hammerRead(r, time.Now().Add(50*time.Millisecond)); err != nil {
		t.Error(err)
	}
}
