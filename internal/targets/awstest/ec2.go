package awstest

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// stateCodes are EC2's numeric codes for its instance state names.
var stateCodes = map[string]int{
	"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80,
}

func (s *Server) ec2Locked(req request) (any, *apiError) {
	if req.action == "DescribeInstances" {
		return s.describeInstancesLocked(req.form)
	}
	return nil, &apiError{http.StatusBadRequest, "InvalidAction", "The action " + req.action + " is not valid for this web service."}
}

type instanceXML struct {
	InstanceID    string `xml:"instanceId"`
	ImageID       string `xml:"imageId"`
	InstanceState struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	} `xml:"instanceState"`
	InstanceType      string `xml:"instanceType"`
	InstanceLifecycle string `xml:"instanceLifecycle"`
}

type reservationXML struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Instances     []instanceXML `xml:"instancesSet>item"`
}

type describeInstancesResponse struct {
	RequestID    string           `xml:"requestId"`
	Reservations []reservationXML `xml:"reservationSet>item"`
}

// describeInstancesLocked answers for the named instances (EC2 lists are flat:
// InstanceId.1, InstanceId.2). Like EC2, one unknown id fails the whole call.
func (s *Server) describeInstancesLocked(form url.Values) (any, *apiError) {
	var ids []string
	for i := 1; ; i++ {
		v, ok := form["InstanceId."+strconv.Itoa(i)]
		if !ok {
			break
		}
		ids = append(ids, v[0])
	}
	var missing []string
	for _, id := range ids {
		if !strings.HasPrefix(id, "i-") || len(id) < 3 {
			return nil, &apiError{http.StatusBadRequest, "InvalidInstanceID.Malformed", fmt.Sprintf("Invalid id: %q", id)}
		}
		if _, ok := s.instances[id]; !ok {
			missing = append(missing, id)
		}
	}
	switch len(missing) {
	case 0:
	case 1:
		return nil, &apiError{http.StatusBadRequest, "InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", missing[0])}
	default:
		return nil, &apiError{http.StatusBadRequest, "InvalidInstanceID.NotFound", fmt.Sprintf("The instance IDs '%s' do not exist", strings.Join(missing, ", "))}
	}
	if len(ids) == 0 {
		for id := range s.instances {
			ids = append(ids, id)
		}
		sort.Strings(ids)
	}
	out := &describeInstancesResponse{}
	for n, id := range ids {
		var inst instanceXML
		inst.InstanceID = id
		inst.ImageID = "ami-0123456789abcdef0"
		inst.InstanceType = "m7g.large"
		inst.InstanceLifecycle = "spot"
		inst.InstanceState.Name = s.instances[id]
		inst.InstanceState.Code = stateCodes[s.instances[id]]
		out.Reservations = append(out.Reservations, reservationXML{
			ReservationID: fmt.Sprintf("r-%017x", n+1),
			OwnerID:       accountID,
			Instances:     []instanceXML{inst},
		})
	}
	return out, nil
}
