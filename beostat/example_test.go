package beostat_test

import (
	"fmt"
	"log"
	"net/netip"
	"os"
	"time"

	"github.com/hoststat/hoststat/beostat"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

func Example() {
	// recvstats keeps the table; here a writer stands in for it.
	dir, _ := os.MkdirTemp("", "beostat-example")
	defer os.RemoveAll(dir)
	w, err := shm.Create(dir, shm.WriterOptions{DownAfter: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	w.Put(3, netip.MustParseAddrPort("10.0.0.3:3040"), time.Now(), &sample.Sample{
		Time:   time.Now(),
		CPUs:   []sample.CPU{{Ticks: sample.Ticks{User: 30, Idle: 70}, MHz: 2400}},
		Memory: sample.Memory{Total: 8 << 30, Available: 6 << 30},
		Load:   sample.Load{One: 0.25},
	})

	// A reader, in any process.
	t, err := beostat.Open(dir) // beostat.Open("") reads /var/shm
	if err != nil {
		log.Fatal(err)
	}
	defer t.Close()
	up, _ := t.NodeAvailable(3)
	cpus, _ := t.CPUCount(3)
	pct, _ := t.CPUPercent(3, 0)
	mem, _ := t.Memory(3)
	load, _ := t.Load(3)
	fmt.Printf("node 3 up=%v, %d CPU, %.0f%% busy, %d GiB used of %d, load %.2f\n",
		up, cpus, pct, beostat.MemUsed(mem)>>30, mem.Total>>30, load.One)
	idle, _ := t.IdleCPUs(50)
	fmt.Println("CPUs under 50% busy:", idle)
	_, err = t.CPUCount(2)
	fmt.Println(err)
	// Output:
	// node 3 up=true, 1 CPU, 30% busy, 2 GiB used of 8, load 0.25
	// CPUs under 50% busy: 1
	// beostat: node 2: never seen: no status received from it
}
