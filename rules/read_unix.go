//go:build unix

package rules

import "syscall"

// openNoBlock makes opening a named pipe return at once rather than wait
// for a writer; on a regular file it changes nothing.
const openNoBlock = syscall.O_NONBLOCK
