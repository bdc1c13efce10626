package nsm

import (
	"errors"
	"math"
	"testing"
)

func TestNextUpState(t *testing.T) {
	cases := []struct {
		in, want int32
		err      error
	}{
		{0, 1, nil},
		{1, 3, nil},
		{2, 3, nil},
		{3, 5, nil},
		{100, 101, nil},
		{-4, 1, nil},
		{math.MaxInt32 - 2, math.MaxInt32, nil},
		{math.MaxInt32 - 1, math.MaxInt32, nil},
		{math.MaxInt32, 0, ErrStateExhausted},
	}
	for _, c := range cases {
		got, err := NextUpState(c.in)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("NextUpState(%d) = %d, %v; want %d, %v", c.in, got, err, c.want, c.err)
		}
		if err == nil && (got <= c.in || got%2 != 1) {
			t.Errorf("NextUpState(%d) = %d is not a larger odd number", c.in, got)
		}
	}
}

func TestDecideStart(t *testing.T) {
	cases := []struct {
		name   string
		prev   Boot
		bootID string
		force  bool
		want   StartDecision
	}{
		{"new store", Boot{New: true}, "b1", false, StartDecision{Reboot: true, State: 1, Reason: "new store"}},
		{"same boot: daemon restart", Boot{BootID: "b1", State: 5}, "b1", false, StartDecision{State: 5, Reason: "daemon restart within the same boot"}},
		{"boot id changed", Boot{BootID: "b1", State: 5}, "b2", false, StartDecision{Reboot: true, State: 7, Reason: "boot id changed"}},
		{"boot id changed from even", Boot{BootID: "b1", State: 6}, "b2", false, StartDecision{Reboot: true, State: 7, Reason: "boot id changed"}},
		{"forced on same boot (-n)", Boot{BootID: "b1", State: 5}, "b1", true, StartDecision{Reboot: true, State: 7, Reason: "reboot forced"}},
		{"forced on new store", Boot{New: true}, "b1", true, StartDecision{Reboot: true, State: 1, Reason: "reboot forced"}},
		{"restart with an even state left by others", Boot{BootID: "b1", State: 8}, "b1", false, StartDecision{State: 9, Reason: "restart with even state"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecideStart(c.prev, c.bootID, c.force)
			if err != nil || got != c.want {
				t.Fatalf("DecideStart = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
	if _, err := DecideStart(Boot{BootID: "a", State: math.MaxInt32}, "b", false); !errors.Is(err, ErrStateExhausted) {
		t.Errorf("reboot at the top of int32: %v, want ErrStateExhausted", err)
	}
}
