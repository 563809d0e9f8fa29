package audit

// AppendCanonical appends r's canonical encoding (without Hash), the bytes
// its hash is computed over, to b.
func AppendCanonical(b []byte, r *Record) []byte { return appendCanonical(b, r) }
