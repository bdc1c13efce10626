//go:build !linux

package wire

func processEpoch() uint64 { return wallEpoch() }
