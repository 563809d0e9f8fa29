//go:build !unix

package rules

// openNoBlock is 0 where opening a file cannot wait for a writer.
const openNoBlock = 0
