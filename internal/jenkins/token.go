package jenkins

import (
	"context"
	"fmt"
	"net/http"
)

// retryWithFreshToken answers a 401 to a request that carried the token from
// Options.TokenSource: the token may have been rotated since it was read, so it asks
// the source for a fresh one and sends the request again, once. When the source
// fails, or the body cannot be replayed, the 401 stands (statusError then names the
// credentials) and the refresh error is logged.
func (c *Client) retryWithFreshToken(ctx context.Context, req *http.Request, resp *http.Response) (*http.Response, error) {
	fresh, err := c.source(ctx, true)
	if err != nil {
		c.log.Warn("jenkins refused the api token and it could not be read again", "path", req.URL.Path, "err", err)
		return resp, nil
	}
	retry := req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return resp, nil
		}
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		retry.Body = body
	}
	discardBody(resp)
	retry.SetBasicAuth(c.user, fresh)
	c.log.Debug("jenkins refused the api token; retrying with the token read again", "path", req.URL.Path)
	out, err := c.http.Do(retry)
	if err != nil {
		return nil, fmt.Errorf("%s %s after reading the api token again: %w", req.Method, req.URL.Path, err)
	}
	return out, nil
}
