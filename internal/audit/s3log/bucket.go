// Package s3log keeps the decision log's Parquet segments in S3-compatible
// object storage, for a fleet: every replica of every cluster uploads its
// closed segments into one bucket without coordination (a segment is one
// writer's, and every writer has its own chain), under
//
//	PREFIX/cluster=NAME/day=YYYY-MM-DD/<writer>-<first>-<last>.parquet
//
// so that one cluster or one day is read without listing the rest, and
// any engine that reads Parquet on S3 (DuckDB, Trino, Athena, Spark)
// queries the fleet. The client is the AWS SDK for Go v2, configured the
// standard way: AWS_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (an
// S3-compatible server, addressed path-style), and the SDK's credential
// chain (environment, web identity for EKS, instance role).
package s3log

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/egress-authz/egress-authz/internal/audit/parquetlog"
)

// ParseDSN reads s3://BUCKET/PREFIX (the prefix may be empty).
func ParseDSN(dsn string) (bucket, prefix string, err error) {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme != "s3" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("decision log %q: want s3://BUCKET/PREFIX", dsn)
	}
	return u.Host, strings.Trim(u.Path, "/"), nil
}

// Bucket is a bucket's prefix as a parquetlog.Storage. It is safe for
// concurrent use.
type Bucket struct {
	client *s3.Client
	tm     *transfermanager.Client
	bucket string
	prefix string // "" or ending in "/"
}

// NewBucket returns the bucket and prefix of an s3:// DSN, with a client
// configured from the environment.
func NewBucket(ctx context.Context, dsn string) (*Bucket, error) {
	bucket, prefix, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("decision log %s: AWS configuration: %w", dsn, err)
	}
	// An S3-compatible server named by endpoint serves buckets by path,
	// not as host names.
	pathStyle := os.Getenv("AWS_ENDPOINT_URL_S3") != "" || os.Getenv("AWS_ENDPOINT_URL") != ""
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = o.UsePathStyle || pathStyle })
	if prefix != "" {
		prefix += "/"
	}
	return &Bucket{client: client, tm: transfermanager.New(client), bucket: bucket, prefix: prefix}, nil
}

func (b *Bucket) key(name string) string { return b.prefix + name }

// String implements parquetlog.Storage.
func (b *Bucket) String() string { return "s3://" + b.bucket + "/" + strings.TrimSuffix(b.prefix, "/") }

// List implements parquetlog.Storage.
func (b *Bucket) List(ctx context.Context, prefix string) ([]parquetlog.Object, error) {
	var out []parquetlog.Object
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.bucket, Prefix: aws.String(b.key(prefix))})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: list %s: %w", b, prefix, err)
		}
		for _, o := range page.Contents {
			out = append(out, parquetlog.Object{Name: strings.TrimPrefix(aws.ToString(o.Key), b.prefix), Size: aws.ToInt64(o.Size)})
		}
	}
	return out, nil
}

// Dirs implements parquetlog.Storage: the common prefixes under prefix.
func (b *Bucket) Dirs(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.bucket, Prefix: aws.String(b.key(prefix)), Delimiter: aws.String("/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: list %s: %w", b, prefix, err)
		}
		for _, cp := range page.CommonPrefixes {
			out = append(out, strings.TrimPrefix(aws.ToString(cp.Prefix), b.prefix))
		}
	}
	return out, nil
}

// Open implements parquetlog.Storage: the object is read in blocks, a few
// kept, so that reading a footer costs one request and reading a row
// group a few.
func (b *Bucket) Open(ctx context.Context, name string) (parquetlog.ObjectReader, error) {
	head, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: aws.String(b.key(name))})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%s: %s: %w", b, name, os.ErrNotExist)
		}
		return nil, fmt.Errorf("%s: %s: %w", b, name, err)
	}
	return &objectReader{ctx: ctx, b: b, key: b.key(name), size: aws.ToInt64(head.ContentLength), blocks: map[int64][]byte{}}, nil
}

// Put implements parquetlog.Storage.
func (b *Bucket) Put(ctx context.Context, name string, data []byte) error {
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.bucket, Key: aws.String(b.key(name)),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c})
	if err != nil {
		return fmt.Errorf("%s: put %s: %w", b, name, err)
	}
	return nil
}

// Remove implements parquetlog.Storage.
func (b *Bucket) Remove(ctx context.Context, names ...string) error {
	for len(names) > 0 {
		n := min(len(names), 1000)
		var ids []types.ObjectIdentifier
		for _, name := range names[:n] {
			ids = append(ids, types.ObjectIdentifier{Key: aws.String(b.key(name))})
		}
		out, err := b.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &b.bucket, Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return fmt.Errorf("%s: delete: %w", b, err)
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return fmt.Errorf("%s: delete %s: %s", b, aws.ToString(e.Key), aws.ToString(e.Message))
		}
		names = names[n:]
	}
	return nil
}

// Upload puts the local file at path to name, multipart when it is large,
// with a CRC-32C the server checks, then reads the object's size and
// checksum back: only an upload that verified returns nil.
func (b *Bucket) Upload(ctx context.Context, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	key := b.key(name)
	if st.Size() <= maxPut {
		// Never over an object already there: that is another process's
		// segment of the same chain (a copied data directory), or this
		// one's, uploaded before a failure hid the answer.
		_, err := b.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.bucket, Key: &key, Body: f,
			IfNoneMatch: aws.String("*"), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c})
		if isPreconditionFailed(err) {
			return b.sameObject(ctx, name, key, f)
		}
		if err != nil {
			return fmt.Errorf("%s: upload %s: %w", b, name, err)
		}
	} else if _, err := b.tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: &b.bucket, Key: &key, Body: f,
		ChecksumAlgorithm: tmtypes.ChecksumAlgorithmCrc32c}); err != nil {
		return fmt.Errorf("%s: upload %s: %w", b, name, err)
	}
	head, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &key, ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		return fmt.Errorf("%s: check %s: %w", b, name, err)
	}
	if got := aws.ToInt64(head.ContentLength); got != st.Size() {
		return fmt.Errorf("%s: %s holds %d bytes after the upload, want %d", b, name, got, st.Size())
	}
	return nil
}

// maxPut is the largest segment uploaded in one conditional PUT; larger
// ones (far beyond a segment's usual size) go in parts.
const maxPut = 1 << 30

// ErrExists is returned by Upload when the bucket holds another object
// under the name.
var ErrExists = errors.New("another object of that name is in the bucket")

func isPreconditionFailed(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "PreconditionFailed" || ae.ErrorCode() == "ConditionalRequestConflict")
}

// sameObject reports (nil) whether the object at key holds f's bytes, by
// its CRC-32C (or, when the server keeps none, its ETag, the MD5 of a
// single PUT); otherwise an error wrapping ErrExists.
func (b *Bucket) sameObject(ctx context.Context, name, key string, f *os.File) error {
	head, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &key, ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		return fmt.Errorf("%s: check %s: %w", b, name, err)
	}
	c, m := crc32.New(crc32.MakeTable(crc32.Castagnoli)), md5.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(io.MultiWriter(c, m), f); err != nil {
		return err
	}
	same := false
	if head.ChecksumCRC32C != nil {
		same = aws.ToString(head.ChecksumCRC32C) == base64.StdEncoding.EncodeToString(c.Sum(nil))
	} else {
		same = strings.Trim(aws.ToString(head.ETag), `"`) == hex.EncodeToString(m.Sum(nil))
	}
	if !same {
		return fmt.Errorf("%s: %s: %w", b, name, ErrExists)
	}
	return nil
}

func isNotFound(err error) bool {
	var nf *types.NotFound
	var nk *types.NoSuchKey
	var ae smithy.APIError
	return errors.As(err, &nf) || errors.As(err, &nk) || errors.As(err, &ae) && (ae.ErrorCode() == "NotFound" || ae.ErrorCode() == "NoSuchKey")
}

// blockSize is how much of an object one request reads.
const blockSize = 1 << 20

// maxBlocks is how many blocks an open object keeps.
const maxBlocks = 16

// objectReader reads an object by ranged requests, a block at a time.
type objectReader struct {
	ctx  context.Context
	b    *Bucket
	key  string
	size int64

	mu     sync.Mutex
	blocks map[int64][]byte // by block number
	order  []int64          // oldest first
}

func (r *objectReader) Size() int64  { return r.size }
func (r *objectReader) Close() error { return nil }

func (r *objectReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < r.size {
		blk, err := r.block(off / blockSize)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], blk[off%blockSize:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *objectReader) block(i int64) ([]byte, error) {
	r.mu.Lock()
	if b, ok := r.blocks[i]; ok {
		r.mu.Unlock()
		return b, nil
	}
	r.mu.Unlock()
	start := i * blockSize
	end := min(start+blockSize, r.size) - 1
	out, err := r.b.client.GetObject(r.ctx, &s3.GetObjectInput{Bucket: &r.b.bucket, Key: &r.key,
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", start, end))})
	if err != nil {
		return nil, fmt.Errorf("%s: read %s: %w", r.b, strings.TrimPrefix(r.key, r.b.prefix), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, blockSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read %s: %w", r.b, strings.TrimPrefix(r.key, r.b.prefix), err)
	}
	if int64(len(b)) != end-start+1 {
		return nil, fmt.Errorf("%s: read %s: %d bytes at %d, want %d", r.b, strings.TrimPrefix(r.key, r.b.prefix), len(b), start, end-start+1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.blocks[i]; !ok {
		r.blocks[i] = b
		r.order = append(r.order, i)
		if len(r.order) > maxBlocks {
			delete(r.blocks, r.order[0])
			r.order = r.order[1:]
		}
	}
	return b, nil
}

// Key returns the name of the sink an s3:// DSN names (audit.Sink.Name):
// the DSN as Bucket.String writes it, or dsn itself when it is not one.
func Key(dsn string) string {
	bucket, prefix, err := ParseDSN(dsn)
	if err != nil {
		return dsn
	}
	return "s3://" + bucket + "/" + prefix
}

// StagingDir is the directory under dataDir where the sink for dsn stages
// its segments: one per bucket and prefix, so that two sinks never share.
func StagingDir(dataDir, dsn string) string {
	var name strings.Builder
	for _, c := range []byte(strings.TrimSuffix(strings.TrimPrefix(Key(dsn), "s3://"), "/")) {
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_':
			name.WriteByte(c)
		case c == '/':
			name.WriteByte('+')
		default:
			fmt.Fprintf(&name, "%%%02X", c)
		}
	}
	return filepath.Join(dataDir, "s3", name.String())
}

// Check fails unless the bucket exists and can be read: a reader with a
// mistyped name must not see an empty, intact log.
func (b *Bucket) Check(ctx context.Context) error {
	if _, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &b.bucket}); err != nil {
		return fmt.Errorf("decision log %s: %w", b, err)
	}
	return nil
}
