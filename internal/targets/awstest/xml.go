package awstest

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"strconv"
)

// XML namespaces of the three services' responses.
const (
	nsELBv2       = "http://elasticloadbalancing.amazonaws.com/doc/" + VersionELBv2 + "/"
	nsAutoScaling = "http://autoscaling.amazonaws.com/doc/" + VersionAutoScaling + "/"
	nsEC2         = "http://ec2.amazonaws.com/doc/" + VersionEC2 + "/"
)

// writeResponse answers a successful call. ELBv2 and Auto Scaling wrap the result:
// <XResponse xmlns><XResult>..</XResult><ResponseMetadata><RequestId>; EC2 does not:
// <XResponse xmlns><requestId>..</requestId>...fields...</XResponse>.
func writeResponse(w http.ResponseWriter, service, action string, result any, requestID string) {
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(&buf)
	var err error
	if service == ServiceEC2 {
		if r, ok := result.(*describeInstancesResponse); ok {
			r.RequestID = requestID
		}
		err = enc.EncodeElement(result, xml.StartElement{
			Name: xml.Name{Local: action + "Response"},
			Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: nsEC2}},
		})
	} else {
		err = encodeQueryEnvelope(enc, service, action, result, requestID)
	}
	if err == nil {
		err = enc.Flush()
	}
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("x-amzn-RequestId", requestID)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

func encodeQueryEnvelope(enc *xml.Encoder, service, action string, result any, requestID string) error {
	ns := nsELBv2
	if service == ServiceAutoScaling {
		ns = nsAutoScaling
	}
	outer := xml.StartElement{
		Name: xml.Name{Local: action + "Response"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: ns}},
	}
	resultStart := xml.StartElement{Name: xml.Name{Local: action + "Result"}}
	if err := enc.EncodeToken(outer); err != nil {
		return err
	}
	if result == nil {
		if err := enc.EncodeToken(resultStart); err != nil {
			return err
		}
		if err := enc.EncodeToken(resultStart.End()); err != nil {
			return err
		}
	} else if err := enc.EncodeElement(result, resultStart); err != nil {
		return err
	}
	meta := struct {
		RequestID string `xml:"RequestId"`
	}{requestID}
	if err := enc.EncodeElement(meta, xml.StartElement{Name: xml.Name{Local: "ResponseMetadata"}}); err != nil {
		return err
	}
	return enc.EncodeToken(outer.End())
}

type queryErrorResponse struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	Xmlns   string   `xml:"xmlns,attr,omitempty"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

// writeQueryError answers in the ELBv2 / Auto Scaling error shape.
func writeQueryError(w http.ResponseWriter, service string, e *apiError, requestID string) {
	var r queryErrorResponse
	r.Xmlns = nsELBv2
	if service == ServiceAutoScaling {
		r.Xmlns = nsAutoScaling
	}
	r.Error.Type = "Sender"
	if e.status >= 500 {
		r.Error.Type = "Receiver"
	}
	r.Error.Code, r.Error.Message, r.RequestID = e.code, e.message, requestID
	writeXMLStatus(w, e.status, requestID, r)
}

type ec2ErrorResponse struct {
	XMLName xml.Name `xml:"Response"`
	Errors  []struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Errors>Error"`
	RequestID string `xml:"RequestID"`
}

// writeEC2Error answers in EC2's error shape, which differs from the other two.
func writeEC2Error(w http.ResponseWriter, e *apiError, requestID string) {
	var r ec2ErrorResponse
	r.Errors = append(r.Errors, struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}{e.code, e.message})
	r.RequestID = requestID
	writeXMLStatus(w, e.status, requestID, r)
}

func writeXMLStatus(w http.ResponseWriter, status int, requestID string, v any) {
	out, err := xml.Marshal(v)
	if err != nil {
		http.Error(w, "encode error: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("x-amzn-RequestId", requestID)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(out)
}
