package loopback

import "testing"

// TestHost: only loopback addresses and localhost name this machine; a
// rebound name (or any other address) does not.
func TestHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:9724": true, "127.1.2.3": true, "[::1]:80": true, "::1": true, "localhost:8040": true,
		"localhost": true, "evil.example:80": false, "localhost.evil.example": false, "10.0.0.1:80": false,
		"[::ffff:10.0.0.1]:80": false, "": false,
	} {
		if got := Host(host); got != want {
			t.Errorf("Host(%q) = %v, want %v", host, got, want)
		}
	}
}
