// Command hello is built by BuildCommands in the netlab tests: it prints the
// host name and interfaces it sees, which proves it ran inside a lab host.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	name, err := os.Hostname()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Print(name)
	ifs, _ := net.Interfaces()
	for _, ifi := range ifs {
		fmt.Print(" ", ifi.Name)
	}
	fmt.Println()
}
