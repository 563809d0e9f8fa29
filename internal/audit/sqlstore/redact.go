package sqlstore

import (
	"net/url"
	"strings"
)

// secretParams are the connection parameters that hold credentials.
var secretParams = []string{"password", "sslpassword"}

// Redact returns a PostgreSQL DSN without its credentials: the user and
// password of a URL ("postgres://user:secret@host/db"), and the password
// parameters of a URL's query or of a keyword/value DSN
// ("host=db password=secret"). What is left names the database, for logs
// and metrics. Any URL is redacted alike.
func Redact(dsn string) string {
	if strings.Contains(dsn, "://") {
		return redactURL(dsn)
	}
	return redactKeywords(dsn)
}

func redactURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		// Too broken to tell the credentials from the rest (pgx cannot
		// open it either): keep only the scheme.
		scheme, _, _ := strings.Cut(dsn, "://")
		return scheme + "://(unparsable)"
	}
	u.User = nil
	if u.RawQuery != "" {
		q := u.Query()
		removed := false
		for _, k := range secretParams {
			if q.Has(k) {
				q.Del(k)
				removed = true
			}
		}
		if removed {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

// redactKeywords drops the secret parameters of a keyword/value DSN, whose
// values may be single-quoted with backslash escapes.
func redactKeywords(dsn string) string {
	var kept []string
	s := strings.TrimSpace(dsn)
	for s != "" {
		key, rest, ok := strings.Cut(s, "=")
		key = strings.TrimSpace(key)
		if !ok {
			kept = append(kept, key)
			break
		}
		rest = strings.TrimLeft(rest, " \t\n\r")
		var value string
		if strings.HasPrefix(rest, "'") {
			end := 1
			for end < len(rest) && rest[end] != '\'' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			end = min(end+1, len(rest))
			value, rest = rest[:end], rest[end:]
		} else {
			end := strings.IndexAny(rest, " \t\n\r")
			if end < 0 {
				end = len(rest)
			}
			value, rest = rest[:end], rest[end:]
		}
		secret := false
		for _, k := range secretParams {
			secret = secret || key == k
		}
		if !secret {
			kept = append(kept, key+"="+value)
		}
		s = strings.TrimSpace(rest)
	}
	return strings.Join(kept, " ")
}
