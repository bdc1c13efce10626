package wire

import "golang.org/x/sys/unix"

// processEpoch is the time since boot, which unlike the wall clock never
// goes back while the boot lasts: a restarted sender always gets a larger
// epoch than the process before it.
func processEpoch() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return wallEpoch()
	}
	return uint64(ts.Nano())
}
