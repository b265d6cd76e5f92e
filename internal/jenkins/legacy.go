package jenkins

import "context"

// V1 gives a Client the method set the agent used before Ready and RunningBuilds
// returning []Build: Probe, QuietDown, and RunningBuilds as URLs.
//
// Deprecated: wire the *Client itself once the agent's Jenkins interface has Ready
// and RunningBuilds(ctx) ([]Build, error); then delete V1.
type V1 struct{ *Client }

// RunningBuilds lists the URLs of Client.RunningBuilds; a build the user may not
// read shows as "(unreadable build)".
//
// Deprecated: use Client.RunningBuilds.
func (v V1) RunningBuilds(ctx context.Context) ([]string, error) {
	builds, err := v.Client.RunningBuilds(ctx)
	if err != nil {
		return nil, err
	}
	urls := make([]string, 0, len(builds))
	for _, b := range builds {
		u := b.URL
		if u == "" {
			u = "(unreadable build)"
		}
		urls = append(urls, u)
	}
	return urls, nil
}
