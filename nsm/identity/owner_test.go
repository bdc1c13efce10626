package identity

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/etcdlab"
	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/nsm/etcdstore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	prefix    = "/hoststat"
	helperEnv = "HOSTSTAT_IDENTITY_OWNER_ENDPOINTS"
)

var nfs = Identity{Name: "nfs.example"}

// TestMain runs the test binary as an owner process when asked: it takes
// the identity, moves its state, prints it and serves until killed.
func TestMain(m *testing.M) {
	if eps := os.Getenv(helperEnv); eps != "" {
		if err := ownerProcess(strings.Split(eps, ",")); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		select {}
	}
	os.Exit(m.Run())
}

func ownerProcess(endpoints []string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	ow, err := Campaign(context.Background(), cli, prefix, nfs, "helper", Options{TTL: 3 * time.Second})
	if err != nil {
		return err
	}
	_, state, err := takeOver(cli, ow)
	if err != nil {
		return err
	}
	fmt.Printf("serving %d\n", state)
	return nil
}

// takeOver is what a statd does on winning an identity: open its store
// fenced by the ownership and move the state to the next odd number.
func takeOver(cli *clientv3.Client, ow *Owner) (*etcdstore.Store, int32, error) {
	st, err := etcdstore.Open(context.Background(), cli, etcdstore.IdentityPrefix(prefix, ow.Identity().Name), etcdstore.Options{Fence: ow})
	if err != nil {
		return nil, 0, err
	}
	state, err := st.SimulateCrash(context.Background(), time.Now())
	if err != nil {
		st.Close()
		return nil, 0, err
	}
	return st, state, nil
}

// own takes the identity as holder and moves its state, as a statd does;
// the store is closed when the test ends.
func own(t *testing.T, cli *clientv3.Client, holder string, ttl time.Duration) (*Owner, *etcdstore.Store, int32) {
	t.Helper()
	ow, err := Campaign(context.Background(), cli, prefix, nfs, holder, Options{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	st, state, err := takeOver(cli, ow)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return ow, st, state
}

type won struct {
	ow  *Owner
	err error
	at  time.Time
}

func campaign(cli *clientv3.Client, holder string, ttl time.Duration) chan won {
	ch := make(chan won, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		ow, err := Acquire(ctx, cli, prefix, nfs, holder, Options{TTL: ttl})
		ch <- won{ow, err, time.Now()}
	}()
	return ch
}

func seedRegistrations(t *testing.T, cli *clientv3.Client, hosts ...string) {
	t.Helper()
	s, err := etcdstore.Open(context.Background(), cli, etcdstore.IdentityPrefix(prefix, nfs.Name), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, h := range hosts {
		r := nsm.Registration{MonName: h, MyID: nsm.MyID{Name: nfs.Name, Prog: 100021, Vers: 4, Proc: 16}}
		if err := s.Apply(context.Background(), []nsm.Change{{Reg: r}}); err != nil {
			t.Fatal(err)
		}
	}
}

// kill -9 of the owning process: the waiting statd takes the identity
// once the lease expires (TTL 3s: stated bound TTL + 10s on this loaded
// machine), moves its state to the next odd number in one transaction,
// keeps the registrations and owes every client the new state.
func TestKilledOwnerIsTakenOver(t *testing.T) {
	c := etcdlab.Start(t, 3)
	cli := etcdlab.Client(t, c.Endpoints()...)
	seedRegistrations(t, cli, "client1", "client2", "client3")

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(c.Endpoints(), ","))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var first int32
	select {
	case l := <-lines:
		n, err := strconv.ParseInt(strings.TrimPrefix(l, "serving "), 10, 32)
		if err != nil {
			t.Fatalf("owner process said %q", l)
		}
		first = int32(n)
	case <-time.After(60 * time.Second):
		t.Fatal("owner process did not take the identity")
	}

	waiting := campaign(etcdlab.Client(t, c.Endpoints()...), "standby", 3*time.Second)
	select {
	case w := <-waiting:
		t.Fatalf("a second statd took the identity while its owner was alive: %+v", w)
	case <-time.After(2 * time.Second):
	}
	cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	var w won
	select {
	case w = <-waiting:
	case <-time.After(3*time.Second + 10*time.Second):
		t.Fatal("identity not taken over within TTL+10s of kill -9")
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	t.Logf("identity taken over %v after kill -9 of its owner (lease TTL 3s)", w.at.Sub(killed).Round(time.Millisecond))
	st, state, err := takeOver(cli, w.ow)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if state <= first || state%2 != 1 {
		t.Fatalf("state after takeover %d, owner's was %d: want the next odd number above it", state, first)
	}
	regs, _ := st.Registrations()
	owed, _ := st.Owed()
	if len(regs) != 3 || len(owed) != 3 || owed[0].State != state {
		t.Fatalf("after takeover: %d registrations, owed %+v; want 3 kept and 3 owed state %d", len(regs), owed, state)
	}
}

// An owner cut off from etcd by a real network partition stops serving on
// its own clock before its lease expires, another statd takes the identity,
// and once the network is back the old owner's writes are refused. Each
// etcd member runs on its own netlab host; the owner runs beside member 0
// on its host (one member on each NFS server, as docs/ha.md deploys it) and
// talks only to it. Unplugging that host leaves the owner its local member,
// which still answers but is a minority of one and renews no lease.
func TestPartitionedOwnerStopsBeforeTakeover(t *testing.T) {
	lab := netlab.New(t)
	c := etcdlab.StartInLab(t, lab, 3)
	b := lab.AddHost("b")
	cutOff := etcdlab.ClientIn(t, c.Members[0].Host, c.Members[0].Endpoint())
	a, sa, stateA := own(t, cutOff, "a", 4*time.Second)
	majority := etcdlab.ClientIn(t, b, c.Members[1].Endpoint(), c.Members[2].Endpoint())
	waiting := campaign(majority, "b", 4*time.Second)

	c.Members[0].Partition()
	partitioned := time.Now()
	lostAt := make(chan time.Time, 1)
	go func() { <-a.Lost(); lostAt <- time.Now() }()
	var w won
	select {
	case w = <-waiting:
	case <-time.After(60 * time.Second):
		t.Fatal("no takeover within 60s of the partition")
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	var lost time.Time
	select {
	case lost = <-lostAt:
	default:
		t.Fatal("the partitioned owner still served when another statd took the identity")
	}
	t.Logf("partitioned owner stopped %v after the cut, %v before the takeover", lost.Sub(partitioned).Round(time.Millisecond), w.at.Sub(lost).Round(time.Millisecond))
	if err := a.Err(); !errors.Is(err, ErrLost) {
		t.Fatalf("Err after loss = %v", err)
	}
	// Still cut off, the old owner's store refuses at once, without etcd.
	r := nsm.Registration{MonName: "late", MyID: nsm.MyID{Name: nfs.Name, Prog: 100021, Vers: 4, Proc: 16}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := sa.Apply(ctx, []nsm.Change{{Reg: r}})
	cancel()
	if !errors.Is(err, etcdstore.ErrFenced) {
		t.Fatalf("SM_MON to the cut-off owner after it stopped: %v, want ErrFenced at once", err)
	}
	sb, stateB, err := takeOver(majority, w.ow)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if stateB <= stateA || stateB%2 != 1 {
		t.Fatalf("state %d after takeover from %d", stateB, stateA)
	}

	c.Members[0].Heal()
	ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sa.Apply(ctx, []nsm.Change{{Reg: r}}); !errors.Is(err, etcdstore.ErrFenced) {
		t.Fatalf("deposed owner's SM_MON write: %v, want ErrFenced", err)
	}
	if _, err := sa.SimulateCrash(ctx, time.Now()); !errors.Is(err, etcdstore.ErrFenced) {
		t.Fatalf("deposed owner's state move: %v, want ErrFenced", err)
	}
	// Through the healed member, the old owner's view is the majority's.
	healed, err := etcdstore.Open(ctx, cutOff, etcdstore.IdentityPrefix(prefix, nfs.Name), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer healed.Close()
	if regs, _ := healed.Registrations(); len(regs) != 0 {
		t.Fatalf("deposed owner's write landed: %+v", regs)
	}
	if now, _ := healed.State(); now != stateB {
		t.Fatalf("state %d, want %d: the deposed owner moved it", now, stateB)
	}
}

// Killing one of three etcd members (the raft leader) changes nothing for
// an owner: it keeps the identity, its writes go on, its state stays.
func TestOneEtcdMemberDownChangesNothing(t *testing.T) {
	c := etcdlab.Start(t, 3)
	cli := etcdlab.Client(t, c.Endpoints()...)
	a, s, state := own(t, cli, "a", 6*time.Second)
	leader := leaderOf(t, cli, c)
	c.Members[leader].Kill()
	t.Logf("killed etcd member %d, the raft leader", leader)
	keepsServing(t, a, s, state, 6*time.Second)
}

// The raft leader of three cut off by a partition (not killed: its
// connections die without a reset) changes nothing for an owner whose
// client knows all three members. The owner campaigns through the leader
// alone and only then learns the other two, so its long-lived streams
// (the session's lease keepalive, the leader key's watch) are on the
// member cut off, and its requests go round the three. Before, the
// session's keepalive stream gave up after a TTL and the owner took that
// as losing the identity.
func TestOneEtcdMemberPartitionedChangesNothing(t *testing.T) {
	lab := netlab.New(t)
	c := etcdlab.StartInLab(t, lab, 3)
	host := lab.AddHost("a")
	leader := leaderOf(t, etcdlab.ClientIn(t, host, c.Endpoints()...), c)
	cli := etcdlab.ClientIn(t, host, c.Members[leader].Endpoint())
	a, s, state := own(t, cli, "a", 6*time.Second)
	cli.SetEndpoints(c.Endpoints()...)
	c.Members[leader].Partition()
	t.Logf("partitioned etcd member %d, the raft leader", leader)
	keepsServing(t, a, s, state, 6*time.Second)
}

// leaderOf is the index of c's raft leader.
func leaderOf(t *testing.T, cli *clientv3.Client, c *etcdlab.Cluster) int {
	t.Helper()
	for i, m := range c.Members {
		st, err := cli.Status(context.Background(), m.Endpoint())
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	t.Fatal("no etcd leader found")
	return -1
}

// keepsServing checks for three TTLs that owner a keeps the identity,
// that SM_MONs to its store every 200 ms succeed, and that the state
// stays.
func keepsServing(t *testing.T, a *Owner, s *etcdstore.Store, state int32, ttl time.Duration) {
	t.Helper()
	end := time.Now().Add(3 * ttl)
	for i := 0; time.Now().Before(end); i++ {
		if err := a.Err(); err != nil {
			t.Fatalf("ownership lost with one etcd member gone: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r := nsm.Registration{MonName: fmt.Sprintf("c%d", i), MyID: nsm.MyID{Name: nfs.Name, Prog: 100021, Vers: 4, Proc: 16}}
		err := s.Apply(ctx, []nsm.Change{{Reg: r}})
		cancel()
		if err != nil {
			t.Fatalf("SM_MON %d with one etcd member gone: %v", i, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if now, err := s.State(); err != nil || now != state {
		t.Fatalf("state %d (%v), want %d unchanged", now, err, state)
	}
}

// Ten failovers in a row, with a burst of concurrent SM_MONs between each:
// every acknowledged registration is still there at the end, and every
// takeover moved the state to a new, higher odd number. Odd rounds the
// owner resigns (an admin move); even rounds it vanishes without a word
// (its client closed, as a process killed), and the next owner waits out
// the lease.
func TestTenFailoversLoseNoAcknowledgedRegistration(t *testing.T) {
	c := etcdlab.Start(t, 3)
	acked := map[string]bool{}
	last := int32(0)
	for round := range 10 {
		cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ow, err := Campaign(ctx, cli, prefix, nfs, fmt.Sprintf("statd%d", round%2), Options{TTL: 2 * time.Second})
		cancel()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		st, state, err := takeOver(cli, ow)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if state <= last || state%2 != 1 {
			t.Fatalf("round %d: state %d after %d", round, state, last)
		}
		last = state
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				host := fmt.Sprintf("r%02dc%02d", round, i)
				r := nsm.Registration{MonName: host, MyID: nsm.MyID{Name: nfs.Name, Prog: 100021, Vers: 4, Proc: 16}}
				if st.Apply(context.Background(), []nsm.Change{{Reg: r}}) == nil {
					mu.Lock()
					acked[host] = true
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		st.Close()
		if round%2 == 1 {
			if err := ow.Resign(context.Background()); err != nil {
				t.Fatalf("round %d: resign: %v", round, err)
			}
		}
		cli.Close() // even rounds: the lease is left to expire
	}
	if len(acked) != 400 {
		t.Fatalf("%d of 400 SM_MONs acknowledged with the identity owned", len(acked))
	}
	s, err := etcdstore.Open(context.Background(), etcdlab.Client(t, c.Endpoints()...), etcdstore.IdentityPrefix(prefix, nfs.Name), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	regs, err := s.Registrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range regs {
		delete(acked, r.MonName)
	}
	if len(acked) != 0 {
		t.Fatalf("%d acknowledged registrations lost across ten failovers, e.g. %v", len(acked), acked)
	}
}

// statdctl's view and move: the listing names the owner, the state and
// the counts; a move deposes the owner at once (no wait for its 30 s
// lease) and returns once the standby took over with a higher state; a
// move with no standby says so when its time is up.
func TestHoldingsAndMove(t *testing.T) {
	c := etcdlab.Start(t, 1)
	cli := etcdlab.Client(t, c.Endpoints()...)
	if _, _, err := Move(context.Background(), cli, prefix, nfs.Name); !errors.Is(err, ErrNoOwner) {
		t.Fatalf("move of an unowned identity: %v", err)
	}
	a, sa, stateA := own(t, cli, "server-a", 30*time.Second)
	type taken struct {
		st    *etcdstore.Store
		state int32
		err   error
	}
	standby := make(chan taken, 1)
	go func() {
		w := <-campaign(etcdlab.Client(t, c.Endpoints()...), "server-b", 30*time.Second)
		if w.err != nil {
			standby <- taken{err: w.err}
			return
		}
		st, state, err := takeOver(cli, w.ow)
		standby <- taken{st, state, err}
	}()
	seedRegistrations(t, cli, "c1", "c2", "c3")
	other, err := etcdstore.Open(context.Background(), cli, etcdstore.IdentityPrefix(prefix, "other.example"), etcdstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	r := nsm.Registration{MonName: "c9", MyID: nsm.MyID{Name: "other.example", Prog: 100021, Vers: 4, Proc: 16}}
	if err := other.Apply(context.Background(), []nsm.Change{{Reg: r}}); err != nil {
		t.Fatal(err)
	}
	// Wait for b's campaign key, so the move has a standby.
	netlab.WaitFor(t, 20*time.Second, "server-b in the election", func() error {
		resp, err := cli.Get(context.Background(), ElectionPrefix(prefix, nfs.Name)+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count != 2 {
			err = fmt.Errorf("%d candidates", resp.Count)
		}
		return err
	})
	hs, err := Holdings(context.Background(), cli, prefix)
	if err != nil || len(hs) != 2 || hs[0].Name != nfs.Name || hs[0].Holder != "server-a" || hs[0].Lease == 0 || hs[0].State != stateA ||
		hs[0].Registrations != 3 || hs[0].Owed != 0 || hs[1].Name != "other.example" || hs[1].Holder != "" || hs[1].Registrations != 1 {
		t.Fatalf("holdings = %+v, %v; want %s held by server-a at state %d with 3 registrations, and other.example unowned with 1", hs, err, nfs.Name, stateA)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	before, after, err := Move(ctx, cli, prefix, nfs.Name)
	cancel()
	if err != nil {
		t.Fatalf("move: %v (a 30s lease must not be waited out)", err)
	}
	select {
	case <-a.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the moved identity's owner did not stop")
	}
	tb := <-standby
	if tb.err != nil {
		t.Fatal(tb.err)
	}
	defer tb.st.Close()
	if before.Holder != "server-a" || before.State != stateA || after.Holder != "server-b" || after.State != tb.state || tb.state <= stateA || after.Owed != 3 {
		t.Fatalf("move: before %+v, after %+v; want server-a at %d, then server-b at %d > %d owing 3", before, after, stateA, tb.state, stateA)
	}
	if _, err := sa.SimulateCrash(context.Background(), time.Now()); !errors.Is(err, etcdstore.ErrFenced) {
		t.Fatalf("moved-away owner's write: %v, want ErrFenced", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	before, after, err = Move(ctx, cli, prefix, nfs.Name)
	cancel()
	if !errors.Is(err, ErrNotTaken) || before.Holder != "server-b" || after.Holder != "" {
		t.Fatalf("move with no standby: %v, before %+v, after %+v; want ErrNotTaken and nobody owning it", err, before, after)
	}
}
