package send

import (
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func TestAgentSchedule(t *testing.T) {
	a := NewAgent(250*time.Millisecond, 100*time.Millisecond)
	a.Start(t0)
	var sent []time.Duration
	for now := t0; now.Before(t0.Add(time.Second)); now = now.Add(10 * time.Millisecond) {
		if a.Due(now) {
			sent = append(sent, now.Sub(t0))
		}
	}
	want := []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond}
	if len(sent) != len(want) {
		t.Fatalf("samples at %v, want %v", sent, want)
	}
	for i := range want {
		if sent[i] != want[i] {
			t.Errorf("sample %d at %v, want %v", i, sent[i], want[i])
		}
	}
	// A stalled process does not burst to catch up.
	if !a.Due(t0.Add(10 * time.Second)) {
		t.Fatal("not due after a stall")
	}
	if a.Due(t0.Add(10*time.Second + time.Millisecond)) {
		t.Error("second sample right after a stall")
	}
}

func TestAgentAnswers(t *testing.T) {
	a := NewAgent(30*time.Second, 100*time.Millisecond)
	a.Start(t0)
	a.Due(t0)
	now := t0.Add(5 * time.Second)
	if !a.Request(now) {
		t.Fatal("first request not answered")
	}
	// Answering restarts the period: the next sample is a whole period
	// after the answer, so the master sees regular gaps.
	if got := a.Next(); !got.Equal(now.Add(30 * time.Second)) {
		t.Errorf("next sample at %v, want %v", got.Sub(t0), now.Add(30*time.Second).Sub(t0))
	}
	if a.Request(now.Add(50 * time.Millisecond)) {
		t.Error("second request within 100ms answered")
	}
	if !a.Request(now.Add(100 * time.Millisecond)) {
		t.Error("request 100ms later not answered")
	}
	// A periodic sample just sent does not suppress an answer: the master
	// asking may have missed it.
	b := NewAgent(time.Second, 100*time.Millisecond)
	b.Start(t0)
	b.Due(t0)
	if !b.Request(t0.Add(time.Millisecond)) {
		t.Error("request right after a periodic sample not answered")
	}
}
