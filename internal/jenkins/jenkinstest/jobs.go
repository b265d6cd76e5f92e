package jenkinstest

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// jobClass is the Java class of a job and of its builds.
func jobClass(j Job) (job, build string) {
	if j.Pipeline {
		return "org.jenkinsci.plugins.workflow.job.WorkflowJob", classWorkflowRun
	}
	return "hudson.model.FreeStyleProject", classFreeStyleBuild
}

// splitJobPath reads /job/A/job/B/REST... into the full name A/B and REST's
// segments, unescaping each name once, as Stapler does.
func splitJobPath(escaped string) (name string, rest []string, ok bool) {
	segs := strings.Split(strings.Trim(escaped, "/"), "/")
	var names []string
	i := 0
	for i+1 < len(segs) && segs[i] == "job" {
		n, err := url.PathUnescape(segs[i+1])
		if err != nil || n == "" {
			return "", nil, false
		}
		names = append(names, n)
		i += 2
	}
	if len(names) == 0 {
		return "", nil, false
	}
	return strings.Join(names, "/"), segs[i:], true
}

// jobRequest answers the paths under /job/: the job's and a build's api/json, and
// POST build and buildWithParameters.
func (s *Server) jobRequest(w http.ResponseWriter, r *http.Request, c caller) {
	name, rest, ok := splitJobPath(r.URL.EscapedPath())
	job, exists := s.cfg.Jobs[name]
	if !ok || !exists || job.Unreadable || !s.canRead(c) {
		// Jenkins hides what a user may not read behind a 404.
		httpError(w, http.StatusNotFound, "Not Found")
		return
	}
	switch {
	case len(rest) == 2 && rest[0] == "api" && rest[1] == "json":
		s.jobAPI(w, r, name, job)
	case len(rest) == 3 && rest[1] == "api" && rest[2] == "json":
		n, err := strconv.Atoi(rest[0])
		if err != nil || n <= 0 {
			httpError(w, http.StatusNotFound, "Not Found")
			return
		}
		s.buildAPI(w, r, name, job, n)
	case len(rest) == 1 && (rest[0] == "build" || rest[0] == "buildWithParameters"):
		if requirePOST(w, r) && s.permitted(w, c, PermissionBuild) {
			s.buildNow(w, r, c, name, job, rest[0] == "buildWithParameters")
		}
	default:
		httpError(w, http.StatusNotFound, "Not Found")
	}
}

func (s *Server) canRead(c caller) bool { return c.user != "" || s.cfg.AllowAnonymousRead }

// buildNow follows ParameterizedJobMixIn.doBuild and doBuildWithParameters: a
// disabled job is 409; build on a parameterized job wants the form's json field
// (400 without it); buildWithParameters on a job without parameters is 400. The
// cause is the user's (UserIdCause): the cause field counts only with a job's
// remote trigger token, which the double does not have. A new queue item is 201
// with its URL in Location; a build that folds into an identical waiting item is
// 303 from buildWithParameters and still 201 from build.
func (s *Server) buildNow(w http.ResponseWriter, r *http.Request, c caller, name string, job Job, withParams bool) {
	if job.Disabled {
		httpError(w, http.StatusConflict, name+" is not buildable")
		return
	}
	var params map[string]string
	switch {
	case withParams && len(job.Params) == 0:
		httpError(w, http.StatusBadRequest, name+" is not parameterized")
		return
	case withParams:
		params = map[string]string{}
		for _, d := range job.Params {
			if vs, ok := r.Form[d.Name]; ok && len(vs) > 0 {
				params[d.Name] = vs[0]
			}
		}
	case len(job.Params) > 0 && r.FormValue("json") == "":
		httpError(w, http.StatusBadRequest, "Nothing is submitted")
		return
	}
	s.mu.Lock()
	_, id, created, err := s.schedule(name, params, []Cause{userCause(c.user)}, time.Now())
	s.mu.Unlock()
	if err != nil {
		httpError(w, http.StatusNotFound, err.Error())
		return
	}
	w.Header().Set("Location", s.root(r)+"queue/item/"+strconv.Itoa(id)+"/")
	if !created && withParams {
		w.WriteHeader(http.StatusSeeOther)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// jobAPI answers GET /job/NAME/api/json with what Job exports: buildable, the next
// build number and the parameter definitions in its property list.
func (s *Server) jobAPI(w http.ResponseWriter, r *http.Request, name string, job Job) {
	root := s.root(r)
	s.mu.Lock()
	s.advance(time.Now())
	next := s.nextNumber[name] + 1
	inQueue := false
	for _, q := range s.queue {
		inQueue = inQueue || (q.job == name && q.node == nil)
	}
	s.mu.Unlock()
	class, _ := jobClass(job)
	properties := []map[string]any{}
	if len(job.Params) > 0 {
		defs := []map[string]any{}
		for _, d := range job.Params {
			defClass, valueClass, typ := "hudson.model.StringParameterDefinition", "hudson.model.StringParameterValue", "StringParameterDefinition"
			var def any = map[string]any{"_class": valueClass, "name": d.Name, "value": d.Default}
			switch d.Kind {
			case ParamBoolean:
				defClass, typ = "hudson.model.BooleanParameterDefinition", "BooleanParameterDefinition"
				v, _ := strconv.ParseBool(d.Default)
				def = map[string]any{"_class": "hudson.model.BooleanParameterValue", "name": d.Name, "value": v}
			case ParamPassword:
				defClass, typ = "hudson.model.PasswordParameterDefinition", "PasswordParameterDefinition"
				def = map[string]any{"_class": "hudson.model.PasswordParameterValue", "name": d.Name}
			}
			defs = append(defs, map[string]any{"_class": defClass, "name": d.Name, "type": typ, "description": "", "defaultParameterValue": def})
		}
		properties = append(properties, map[string]any{"_class": "hudson.model.ParametersDefinitionProperty", "parameterDefinitions": defs})
	}
	short := name[strings.LastIndex(name, "/")+1:]
	color := "blue"
	if job.Disabled {
		color = "disabled"
	}
	writeJSON(w, map[string]any{
		"_class":          class,
		"name":            short,
		"fullName":        name,
		"url":             root + jobPath(name),
		"buildable":       !job.Disabled,
		"color":           color,
		"inQueue":         inQueue,
		"nextBuildNumber": next,
		"property":        properties,
	})
}

// buildAPI answers GET /job/NAME/N/api/json: the build with its ParametersAction
// (values of string and boolean parameters; a password parameter shows its name
// only) and CauseAction, as Run exports them.
func (s *Server) buildAPI(w http.ResponseWriter, r *http.Request, name string, job Job, n int) {
	root := s.root(r)
	s.mu.Lock()
	s.advance(time.Now())
	b := s.findBuild(name, n)
	var rec BuildRecord
	if b != nil {
		rec = s.record(b)
	}
	s.mu.Unlock()
	if b == nil {
		httpError(w, http.StatusNotFound, "Not Found")
		return
	}
	_, class := jobClass(job)
	actions := []map[string]any{}
	if len(rec.Params) > 0 {
		params := []map[string]any{}
		for _, p := range rec.Params {
			switch p.Kind {
			case ParamBoolean:
				v, _ := strconv.ParseBool(p.Value)
				params = append(params, map[string]any{"_class": "hudson.model.BooleanParameterValue", "name": p.Name, "value": v})
			case ParamPassword:
				params = append(params, map[string]any{"_class": "hudson.model.PasswordParameterValue", "name": p.Name})
			default:
				params = append(params, map[string]any{"_class": "hudson.model.StringParameterValue", "name": p.Name, "value": p.Value})
			}
		}
		actions = append(actions, map[string]any{"_class": "hudson.model.ParametersAction", "parameters": params})
	}
	causes := []map[string]any{}
	for _, c := range rec.Causes {
		m := map[string]any{"_class": c.Class, "shortDescription": c.ShortDescription}
		if c.Class == "hudson.model.Cause$UserIdCause" {
			m["userId"], m["userName"] = nilIfEmpty(c.UserID), nilIfEmpty(c.UserID)
		}
		causes = append(causes, m)
	}
	actions = append(actions, map[string]any{"_class": "hudson.model.CauseAction", "causes": causes}, map[string]any{})
	var result any
	if rec.Result != "" {
		result = rec.Result
	}
	writeJSON(w, map[string]any{
		"_class":          class,
		"actions":         actions,
		"building":        rec.Result == "",
		"displayName":     "#" + strconv.Itoa(n),
		"fullDisplayName": name + " #" + strconv.Itoa(n),
		"id":              strconv.Itoa(n),
		"number":          n,
		"result":          result,
		"url":             root + b.path(),
	})
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// queueAPI answers GET /queue/api/json the way Queue exports its items. A build of a
// job has the job as task (absolute url); a Pipeline's node block has its
// PlaceholderTask as task, whose url is the run's, relative to the root. In
// quiet-down every item is blocked by the shutdown, and says so in why.
func (s *Server) queueAPI(w http.ResponseWriter, r *http.Request) {
	root := s.root(r)
	s.mu.Lock()
	s.advance(time.Now())
	quieting := s.quieting
	// Copies: a build's job and number never change, so node may be read unlocked.
	var items []queueItem
	for _, q := range s.queue {
		items = append(items, *q)
	}
	s.mu.Unlock()
	why := "Waiting for next available executor"
	if quieting {
		why = "Jenkins is about to shut down"
	}
	out := []map[string]any{}
	for _, q := range items {
		job := s.cfg.Jobs[q.job]
		if job.Unreadable {
			continue
		}
		var task map[string]any
		if q.node != nil {
			runName := q.job + " #" + strconv.Itoa(q.node.number)
			task = map[string]any{"_class": classPlaceholderTask, "name": "part of " + runName, "url": q.node.path()}
		} else {
			class, _ := jobClass(job)
			task = map[string]any{"_class": class, "name": q.job[strings.LastIndex(q.job, "/")+1:], "url": root + jobPath(q.job), "color": "blue"}
		}
		var params strings.Builder
		for _, p := range q.params {
			params.WriteString("\n" + p.Name + "=")
			if p.Kind != ParamPassword {
				params.WriteString(p.Value)
			}
		}
		ms := q.since.UnixMilli()
		out = append(out, map[string]any{
			"_class":                     "hudson.model.Queue$BuildableItem",
			"actions":                    []map[string]any{},
			"blocked":                    false,
			"buildable":                  true,
			"id":                         q.id,
			"inQueueSince":               ms,
			"params":                     params.String(),
			"stuck":                      false,
			"task":                       task,
			"url":                        "queue/item/" + strconv.Itoa(q.id) + "/",
			"why":                        why,
			"buildableStartMilliseconds": ms,
			"pending":                    false,
		})
	}
	writeJSON(w, map[string]any{"_class": "hudson.model.Queue", "discoverableItems": []any{}, "items": out})
}
