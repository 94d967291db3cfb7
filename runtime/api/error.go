package api

// Error is a request's failure with the error code the ExeUnit should see:
// BAD_REQUEST for input the requestor got wrong, INTERNAL for failures of
// this host. The service replies with Code, and with Field as the error's
// "field" context when it is set.
type Error struct {
	Code    Response_ErrorCode
	Field   string // the request field at fault, if one is
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }
