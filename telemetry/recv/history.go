package recv

import "github.com/hoststat/hoststat/shm"

// historyOptions sizes the history file: it starts with the table's
// initial node count and grows to --history-nodes, never beyond
// --max-nodes (no node numbers above it get a slot anyway).
func historyOptions(o shm.HistoryOptions, initialNodes, maxNodes int) shm.HistoryOptions {
	if o.Nodes <= 0 {
		o.Nodes = shm.DefaultHistoryNodes
	}
	o.Nodes = min(o.Nodes, maxNodes)
	if o.Initial <= 0 {
		o.Initial = initialNodes
	}
	return o
}
