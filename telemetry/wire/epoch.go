package wire

import "time"

// wallEpoch stands in for the boot clock where there is none.
func wallEpoch() uint64 { return uint64(time.Now().UnixNano()) }
