package sample

// Limits of one node's sample: the one set of figures that both the wire
// protocol (telemetry/wire) and the shared-memory table (shm) hold to, so
// that a sample valid on the wire always fits a record.
const (
	// MaxCPUs and MaxNetDevs bound the CPUs and network devices of a
	// sample.
	MaxCPUs    = 8192
	MaxNetDevs = 1024
	// MaxDisks and MaxFilesystems bound the disks and filesystems of a
	// sample; the collector keeps the first ones, in file order.
	MaxDisks       = 64
	MaxFilesystems = 64
	// MaxNameLen bounds a CPU model or device name on the wire; longer
	// ones are cut by the sender.
	MaxNameLen = 255
	// MaxNodes bounds node numbers, 0..MaxNodes-1.
	MaxNodes = 1 << 20
)
