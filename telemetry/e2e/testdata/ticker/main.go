// Command ticker is the baseline of BenchmarkSendstatsProcess: the least a
// Go program that wakes once a period can cost, a time.Ticker and nothing
// else. Usage: ticker SECONDS.
package main

import (
	"os"
	"strconv"
	"time"
)

func main() {
	secs, err := strconv.ParseFloat(os.Args[1], 64)
	if err != nil || secs <= 0 {
		os.Exit(2)
	}
	t := time.NewTicker(time.Duration(secs * float64(time.Second)))
	for range t.C {
	}
}
