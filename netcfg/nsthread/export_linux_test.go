package nsthread

// Hooks for the external tests: the named-namespace functions on a
// directory of the test's own, so that a test can start from a directory
// that is not yet a mount point, as /run/netns is on a fresh machine.
var (
	NewNamedIn    = newNamedIn
	DeleteNamedIn = deleteNamedIn
)
