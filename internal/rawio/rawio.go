// Package rawio makes the few system calls of sendstats' periodic work
// without telling the Go scheduler, so that an idle agent that wakes once a
// period costs one thread wake-up, not ten.
//
// Why: when every goroutine is idle, the runtime's monitor thread (sysmon)
// sleeps until the next runtime timer. A goroutine that enters a system
// call through package syscall wakes it (runtime.reentersyscall, so that it
// can take back the processor of a call that blocks), and a runtime timer
// wakes it at its deadline; once awake it polls every 20 µs until the
// process is idle again. On a virtual machine each thread wake-up costs
// tens of microseconds of CPU (docs/benchmarks.md, "sendstats: CPU and
// RSS per sample"), more than a whole sample's work. So the agent waits
// for its period on a timerfd through the network poller (no runtime
// timer), and reads /proc, sends and re-arms the timerfd with raw system
// calls, which the scheduler does not see.
//
// Only calls that never block belong here: a raw call holds its thread and
// processor, and stop-the-world waits for it. pread(2) of /proc files,
// sendto(2) with MSG_DONTWAIT, and timerfd_settime(2) and read(2) of a
// non-blocking timerfd qualify.
package rawio
