package netns

import "errors"

// ErrBadConfig reports an unusable Config (empty workdir, bad prefix or
// hostname). Like the contract's errors (sandbox.ErrClosed, ErrNoProcess,
// ErrNotFound, ErrNotExecutable, ErrSetup), it is wrapped with detail; test
// with errors.Is.
var ErrBadConfig = errors.New("sandbox: bad config")
