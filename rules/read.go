package rules

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultMaxFileSize is the most bytes a rule file may hold unless a Reader
// says otherwise: some thirty times a 10,000-rule set (about 2 MB), and
// far from what would run a server out of memory while it parses.
const DefaultMaxFileSize = 64 << 20

// readChunk is how much of a file is read between two looks at the
// context.
const readChunk = 1 << 20

// Reader reads the files of a rule set, within bounds: only regular files
// (a symbolic link is followed, so a Kubernetes ConfigMap's files, links
// into its ..data directory, are read), each of at most MaxFileSize bytes,
// and no further once its context is done. A named pipe, a device or a
// socket is never opened: one could block a reload forever, another
// (/dev/zero) never ends.
//
// The zero value reads with the defaults and drops warnings.
type Reader struct {
	// MaxFileSize is the most bytes one rule file may hold; 0 means
	// DefaultMaxFileSize. A larger file is an error, never read in part.
	MaxFileSize int64
	// Warn, when set, is told of each entry of a rule directory that is
	// skipped because it is not a regular file (a named pipe, a device, a
	// socket); its Pos names the file.
	Warn func(Diagnostic)
}

// Load reads the rule set at path with the default bounds, as
// Reader{}.Load does.
func Load(path string) (*Set, error) {
	return Reader{}.Load(context.Background(), path)
}

// ReadSources reads the files of the rule set at path with the default
// bounds, without parsing them, as Reader{}.ReadSources does.
func ReadSources(path string) ([]Source, error) {
	return Reader{}.ReadSources(context.Background(), path)
}

// Load reads the rule set at path: one YAML file, or every *.yaml and *.yml
// file directly in a directory (names starting with "." skipped, so a
// Kubernetes ConfigMap mount's ..data directory is read once). A returned
// error is an ErrorList when the files were read but are invalid.
func (r Reader) Load(ctx context.Context, path string) (*Set, error) {
	srcs, err := r.ReadSources(ctx, path)
	if err != nil {
		return nil, err
	}
	return Parse(srcs...)
}

// ReadSources reads the files of the rule set at path, as Load does,
// without parsing them. It stops with ctx's error once ctx is done.
func (r Reader) ReadSources(ctx context.Context, path string) ([]Source, error) {
	files, dir, err := r.ruleFiles(path)
	if err != nil {
		return nil, err
	}
	srcs := make([]Source, 0, len(files))
	for _, f := range files {
		data, err := r.readFile(ctx, f)
		var odd notRegular
		if errors.As(err, &odd) && dir {
			// Replaced after it was listed: skipped like the others.
			r.warn(f, odd)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read rules: %w", err)
		}
		srcs = append(srcs, Source{Name: f, Data: data})
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("read rules: no *.yaml or *.yml regular files in directory %s", path)
	}
	return srcs, nil
}

func (r Reader) maxFileSize() int64 {
	if r.MaxFileSize > 0 {
		return r.MaxFileSize
	}
	return DefaultMaxFileSize
}

func (r Reader) warn(name string, odd notRegular) {
	if r.Warn != nil {
		r.Warn(Diagnostic{Pos: Pos{File: name}, Msg: fmt.Sprintf("skipped: %s, not a regular file (rule files must be regular files or links to them)", odd.kind)})
	}
}

// notRegular is the error of a path that is not a regular file.
type notRegular struct {
	name string
	kind string // "a named pipe (FIFO)", "a device"...
}

func (e notRegular) Error() string {
	return fmt.Sprintf("%s is %s, not a regular file", e.name, e.kind)
}

// fileKind names the type of a file that is not regular.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m.IsDir():
		return "a directory"
	}
	return "not a regular file"
}

// ruleFiles lists the rule files path stands for, sorted by name, and
// whether path is a directory. In a directory, entries that are not
// regular files are skipped and warned of; path itself must be a directory
// or a regular file.
func (r Reader) ruleFiles(path string) (files []string, dir bool, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("read rules: %w", err)
	}
	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return nil, false, fmt.Errorf("read rules: %w", notRegular{name: path, kind: fileKind(st.Mode())})
		}
		return []string{path}, false, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, true, fmt.Errorf("read rules: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if ext := filepath.Ext(name); ext != ".yaml" && ext != ".yml" {
			continue
		}
		full := filepath.Join(path, name)
		// Stat, not e.Type: ConfigMap files are symlinks into ..data. A
		// rule file that cannot be read is an error, never skipped: its
		// deny rules would silently disappear.
		fst, err := os.Stat(full)
		if err != nil {
			return nil, true, fmt.Errorf("read rules: %w", err)
		}
		switch {
		case fst.IsDir():
			continue
		case !fst.Mode().IsRegular():
			r.warn(full, notRegular{name: full, kind: fileKind(fst.Mode())})
			continue
		}
		files = append(files, full)
	}
	if len(files) == 0 {
		return nil, true, fmt.Errorf("read rules: no *.yaml or *.yml regular files in directory %s", path)
	}
	sort.Strings(files)
	return files, true, nil
}

// readFile reads a regular file of at most r.maxFileSize() bytes, looking
// at ctx between chunks. It opens without blocking, so that a file
// replaced by a named pipe after it was listed does not wedge the read,
// and checks what it opened before reading it.
func (r Reader) readFile(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(name, os.O_RDONLY|openNoBlock, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, notRegular{name: name, kind: fileKind(st.Mode())}
	}
	limit := r.maxFileSize()
	tooLarge := func() error {
		return fmt.Errorf("%s is larger than %s, the most a rule file may hold", name, byteSize(limit))
	}
	if st.Size() > limit {
		return nil, tooLarge()
	}
	// One byte more than the limit tells a file that grew past it.
	lr := io.LimitReader(f, limit+1)
	data := make([]byte, 0, st.Size()+1)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)] // it grew since the Stat
		}
		n, err := lr.Read(data[len(data):min(cap(data), len(data)+readChunk)])
		data = data[:len(data)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(data)) > limit {
		return nil, tooLarge()
	}
	return data, nil
}

// byteSize writes n as "64 MiB" when it is a whole number of KiB or MiB.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// ReadFile reads one regular file within the Reader's bounds, as a rule
// file is read: for the other files kept beside the rules (a lint policy,
// an Istio policy to import), which are no more trusted than the rules.
func (r Reader) ReadFile(ctx context.Context, name string) (Source, error) {
	data, err := r.readFile(ctx, name)
	if err != nil {
		var odd notRegular
		if errors.As(err, &odd) {
			return Source{}, odd
		}
		return Source{}, err
	}
	return Source{Name: name, Data: data}, nil
}
