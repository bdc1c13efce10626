package send

import "time"

// Agent is sendstats' schedule as a pure state machine: when to take a
// sample, whether to answer an update request, and which sequence number a
// sample carries. It reads no clock and does no I/O.
type Agent struct {
	rate       time.Duration
	answerGap  time.Duration
	next       time.Time // next periodic sample
	lastAnswer time.Time
	seq        uint64
}

// NewAgent returns an agent that samples every rate and answers update
// requests at most once per answerGap.
func NewAgent(rate, answerGap time.Duration) *Agent {
	return &Agent{rate: rate, answerGap: answerGap}
}

// Start fixes the schedule: the first sample is due at once.
func (a *Agent) Start(now time.Time) { a.next = now }

// Next is when the next periodic sample is due.
func (a *Agent) Next() time.Time { return a.next }

// Due reports whether a periodic sample is due at now; if so the schedule
// moves on by whole periods, so a stalled process does not send a burst to
// catch up.
func (a *Agent) Due(now time.Time) bool {
	if now.Before(a.next) {
		return false
	}
	a.next = a.next.Add(a.rate)
	if !a.next.After(now) {
		a.next = now.Add(a.rate)
	}
	return true
}

// Request reports whether an update request received at now is answered
// now. Every node answers the same multicast request, several masters may
// ask together, and a forged request must not turn a node into a traffic
// amplifier: at most one answer per answerGap. An answer restarts the
// period, so the master sees whole periods between samples and does not
// take a node for overdue.
func (a *Agent) Request(now time.Time) bool {
	if !a.lastAnswer.IsZero() && now.Sub(a.lastAnswer) < a.answerGap {
		return false
	}
	a.lastAnswer = now
	a.next = now.Add(a.rate)
	return true
}
