package link

// PutPrefix writes n as p's length prefix into b, for the external tests
// that build wire bytes by hand.
func PutPrefix(p Prefix, b []byte, n int) { p.put(b, n) }
