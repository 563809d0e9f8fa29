package bundle

// OpenWithLimits is Open with smaller bounds, so that a test of a bound
// need not build an archive of hundreds of MiB.
func OpenWithLimits(data []byte, fileSize, totalSize int64, files int) (*Bundle, error) {
	return open(data, limits{size: MaxSize, fileSize: fileSize, totalSize: totalSize, files: files})
}
