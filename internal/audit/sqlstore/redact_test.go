package sqlstore

import (
	"strings"
	"testing"
)

func TestRedactRemovesCredentials(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://db.example:5432/audit", "postgres://db.example:5432/audit"},
		{"postgres://alice:s3cret@db.example:5432/audit?sslmode=verify-full", "postgres://db.example:5432/audit?sslmode=verify-full"},
		{"postgresql://alice@db.example/audit", "postgresql://db.example/audit"},
		{"postgres://db.example/audit?user=alice&password=s3cret&sslmode=require", "postgres://db.example/audit?sslmode=require&user=alice"},
		{"postgres://db.example/audit?sslpassword=s3cret", "postgres://db.example/audit"},
		{"postgres://alice:p@ss:w/rd@db.example/audit", "postgres://(unparsable)"},
		{"host=db.example user=alice password=s3cret dbname=audit", "host=db.example user=alice dbname=audit"},
		{"host=db.example password='s3 cr\\'et' dbname=audit", "host=db.example dbname=audit"},
		{"password = s3cret host=db.example", "host=db.example"},
	} {
		got := Redact(tc.dsn)
		if got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
		if strings.Contains(got, "s3") || strings.Contains(got, "p@ss") {
			t.Errorf("Redact(%q) = %q keeps the password", tc.dsn, got)
		}
	}
}
