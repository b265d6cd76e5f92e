package guard

import "github.com/jenkins-spot-agent/jenkins-spot-agent/internal/lease"

// ParseLeaseRecord decodes the lease record with the lease package's own parser, the
// guard's only tie to the record's format: it needs the holder, the released flag, and
// the renewal and expiry times.
func ParseLeaseRecord(data []byte) (Lease, error) {
	rec, err := lease.ParseRecord(data)
	if err != nil {
		return Lease{}, err
	}
	return Lease{Holder: rec.Holder, Released: rec.Released, RenewedAt: rec.RenewedAt, Expires: rec.Expires}, nil
}
