package parquetlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Storage is where the segments of a log are kept for readers: a local
// directory, or a bucket's prefix in object storage (internal/audit/s3log)
// with the same layout. Names are slash-separated and relative to the
// root:
//
//	[cluster=NAME/]day=YYYY-MM-DD/<writer>-<first>-<last>.parquet
//	_checkpoints/<writer>.json
//
// Its methods are safe for concurrent use.
type Storage interface {
	// List returns every object whose name starts with prefix.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Dirs returns the directories directly under prefix (a directory
	// name ending in "/", or ""), each as prefix + name + "/": in a
	// bucket, the common prefixes of the names under it.
	Dirs(ctx context.Context, prefix string) ([]string, error)
	// Open opens an object for reading.
	Open(ctx context.Context, name string) (ObjectReader, error)
	// Put stores a small object (a checkpoint) whole, replacing it.
	Put(ctx context.Context, name string, data []byte) error
	// Remove removes objects; a name that does not exist is no error.
	Remove(ctx context.Context, names ...string) error
	// String names the storage in messages.
	String() string
}

// Object is an entry of a List.
type Object struct {
	Name string
	Size int64
}

// ObjectReader reads an object at any offset.
type ObjectReader interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// Dir is a local directory as Storage.
type Dir string

// List implements Storage.
func (d Dir) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	root := string(d)
	// Walk only the directories the prefix can be in.
	start := root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = filepath.Join(root, filepath.FromSlash(prefix[:i]))
	}
	err := filepath.WalkDir(start, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == start {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		name := filepath.ToSlash(rel)
		if e.IsDir() {
			if path != start && !strings.HasPrefix(name+"/", prefix) && !strings.HasPrefix(prefix, name+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while listed
			}
			return err
		}
		if info.Mode().IsRegular() {
			out = append(out, Object{Name: name, Size: info.Size()})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parquet decision log %s: %w", root, err)
	}
	return out, nil
}

// Dirs implements Storage.
func (d Dir) Dirs(_ context.Context, prefix string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(string(d), filepath.FromSlash(prefix)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parquet decision log %s: %w", string(d), err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, prefix+e.Name()+"/")
		}
	}
	return out, nil
}

// Open implements Storage.
func (d Dir) Open(_ context.Context, name string) (ObjectReader, error) {
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(name)))
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return fileReader{f, st.Size()}, nil
}

type fileReader struct {
	*os.File
	size int64
}

func (f fileReader) Size() int64 { return f.size }

// Put implements Storage: written to a temporary name, fsynced and
// renamed, with the directory fsynced.
func (d Dir) Put(_ context.Context, name string, data []byte) error {
	path := filepath.Join(string(d), filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// Remove implements Storage; directories left empty go too.
func (d Dir) Remove(_ context.Context, names ...string) error {
	dirs := map[string]bool{}
	for _, name := range names {
		path := filepath.Join(string(d), filepath.FromSlash(name))
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		dirs[filepath.Dir(path)] = true
	}
	for dir := range dirs {
		for dir != string(d) && strings.HasPrefix(dir, string(d)) {
			if os.Remove(dir) != nil { // not empty
				break
			}
			dir = filepath.Dir(dir)
		}
	}
	if len(names) > 0 {
		return syncDir(string(d))
	}
	return nil
}

func (d Dir) String() string { return string(d) }

// readObject reads a small object whole.
func readObject(ctx context.Context, st Storage, name string) ([]byte, error) {
	r, err := st.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Size() > 1<<20 {
		return nil, fmt.Errorf("%s: %d bytes, more than such a file holds", name, r.Size())
	}
	b := make([]byte, r.Size())
	if _, err := r.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// Segment is a closed segment of a listing.
type Segment struct {
	Name   string // in its Storage
	Writer string
	First  uint64
	Last   uint64
}

// ListSegments lists the closed segments of st under prefix, by writer and
// first sequence number.
func ListSegments(ctx context.Context, st Storage, prefix string) ([]Segment, error) {
	refs, err := listSegments(ctx, st, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]Segment, len(refs))
	for i, r := range refs {
		out[i] = Segment{Name: r.name, Writer: r.writer, First: r.first, Last: r.last}
	}
	return out, nil
}

// ClusterPrefix is the prefix of a cluster's segments in a fleet's layout.
func ClusterPrefix(cluster string) string { return clusterPrefix + cluster + "/" }
