package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 for user space (sysconf(_SC_CLK_TCK)) on every
// architecture Go runs on.
const clockTick = 10 * time.Millisecond

// cpuSample is the CPU time (user and system) a process has used so far,
// read two ways: the sum of its threads' run time in nanoseconds
// (/proc/PID/task/*/schedstat), and the whole process's utime+stime in
// clock ticks (/proc/PID/stat), which also counts threads that have
// exited but is only as fine as a tick.
type cpuSample struct {
	run   time.Duration
	ticks int64
}

// procCPU samples the CPU time of process pid.
func procCPU(pid int) (cpuSample, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuSample{}, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	ticks, err := parseStat(b)
	if err != nil {
		return cpuSample{}, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return cpuSample{}, fmt.Errorf("cpu of %d: no /proc/%d/task/*/schedstat", pid, pid)
	}
	s := cpuSample{ticks: ticks}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited since the glob: the ticks still count it
		}
		ns, err := parseSchedstat(b)
		if err != nil {
			return cpuSample{}, fmt.Errorf("cpu of %d: %s: %w", pid, t, err)
		}
		s.run += ns
	}
	return s, nil
}

// since returns the CPU time used between before and s: the nanosecond
// figure, unless the ticks say more was used by more than their rounding
// (a thread exited in between, taking its run time out of the sum).
func (s cpuSample) since(before cpuSample) time.Duration {
	run := s.run - before.run
	ticked := time.Duration(s.ticks-before.ticks) * clockTick
	if ticked > run+2*clockTick {
		return ticked
	}
	return run
}

// parseStat returns utime+stime, in clock ticks, of a /proc/PID/stat line.
// The command name (field 2) is in parentheses and may itself hold spaces
// and parentheses, so the fields are counted from the last ')'.
func parseStat(b []byte) (int64, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := bytes.Fields(b[end+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	utime, err := strconv.ParseInt(string(f[11]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: utime: %w", err)
	}
	stime, err := strconv.ParseInt(string(f[12]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: stime: %w", err)
	}
	return utime + stime, nil
}

// parseSchedstat returns the run time of a /proc/PID/task/TID/schedstat
// line: "<ns on the CPU> <ns waiting for it> <time slices>".
func parseSchedstat(b []byte) (time.Duration, error) {
	f := bytes.Fields(b)
	if len(f) != 3 {
		return 0, fmt.Errorf("schedstat: %d fields, want 3", len(f))
	}
	ns, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("schedstat: %w", err)
	}
	return time.Duration(ns), nil
}
