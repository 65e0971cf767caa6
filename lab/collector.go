package main

import (
	"fmt"
	"reflect"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// pagingCollector is the lab's PropertyCollector. The simulator's own RetrievePropertiesEx
// ignores RetrieveOptions.maxObjects and answers everything in one response, and it does not
// implement ContinueRetrievePropertiesEx at all. A real vCenter pages large results, so a client
// that never follows tokens silently loses objects there. This wrapper pages for real: it first
// asks the simulator only which objects the request selects, then collects the properties of
// one page of them at a time, keeping the rest of the list under a token.
//
// The simulator makes one instance per session by reflecting on the type registered for the
// PropertyCollector singleton, so every session gets a pagingCollector (zero value) of its own.
type pagingCollector struct {
	simulator.PropertyCollector

	pagesMu sync.Mutex
	pages   map[string]*pendingPages
	serial  int
}

// pendingPages is the unread rest of a paged result: which objects, and what to read of them.
type pendingPages struct {
	refs     []types.ManagedObjectReference
	propSet  []types.PropertySpec
	pageSize int
	issued   int // for evicting the oldest results when a client never finishes reading
}

// pageCap, when > 0, limits every page as a busy vCenter does even when the client asked for
// more (or set no maxObjects at all). Set once from --page-cap before serving.
var pageCap int

// maxPendingResults bounds the unread results a collector keeps: a client that abandons
// paged reads without CancelRetrievePropertiesEx cannot make the lab grow without end.
const maxPendingResults = 32

func installPagingCollector(capacity int) {
	pageCap = capacity
	ref := simulator.Map.Get(rootPropertyCollector()).Reference()
	pc := &pagingCollector{}
	pc.Self = ref
	simulator.Map.Put(pc)
}

func rootPropertyCollector() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "PropertyCollector", Value: "propertyCollector"}
}

func (pc *pagingCollector) effectivePageSize(r *types.RetrievePropertiesEx) int {
	size := int(r.Options.MaxObjects)
	if pageCap > 0 && (size <= 0 || size > pageCap) {
		size = pageCap
	}
	return size
}

// RetrievePropertiesEx answers the first page and keeps the rest under a token.
func (pc *pagingCollector) RetrievePropertiesEx(ctx *simulator.Context, r *types.RetrievePropertiesEx) soap.HasFault {
	size := pc.effectivePageSize(r)
	if size <= 0 {
		return emptyAsUnset(pc.PropertyCollector.RetrievePropertiesEx(ctx, r))
	}
	// Which objects: the same request, reading no property of them.
	selecting := *r
	selecting.SpecSet = make([]types.PropertyFilterSpec, len(r.SpecSet))
	var propSet []types.PropertySpec
	for i, spec := range r.SpecSet {
		selecting.SpecSet[i] = spec
		selecting.SpecSet[i].PropSet = make([]types.PropertySpec, len(spec.PropSet))
		for j, p := range spec.PropSet {
			selecting.SpecSet[i].PropSet[j] = types.PropertySpec{Type: p.Type}
		}
		propSet = append(propSet, spec.PropSet...)
	}
	res := pc.PropertyCollector.RetrievePropertiesEx(ctx, &selecting)
	body, ok := res.(*methods.RetrievePropertiesExBody)
	if !ok || body.Res == nil || body.Res.Returnval == nil {
		return res
	}
	refs := make([]types.ManagedObjectReference, len(body.Res.Returnval.Objects))
	for i, o := range body.Res.Returnval.Objects {
		refs[i] = o.Obj
	}
	page, fault := pc.page(ctx, &pendingPages{refs: refs, propSet: propSet, pageSize: size})
	if fault != nil {
		return &methods.RetrievePropertiesExBody{Fault_: fault}
	}
	if len(page.Objects) == 0 && page.Token == "" {
		// vCenter answers an empty result with no RetrieveResult at all.
		return &methods.RetrievePropertiesExBody{Res: &types.RetrievePropertiesExResponse{}}
	}
	return &methods.RetrievePropertiesExBody{Res: &types.RetrievePropertiesExResponse{Returnval: page}}
}

// page collects the properties of the next page of objects, keeping the rest under a token.
func (pc *pagingCollector) page(ctx *simulator.Context, p *pendingPages) (*types.RetrieveResult, *soap.Fault) {
	n := p.pageSize
	if n > len(p.refs) {
		n = len(p.refs)
	}
	result := &types.RetrieveResult{}
	if n > 0 {
		spec := types.PropertyFilterSpec{PropSet: p.propSet, ReportMissingObjectsInResults: types.NewBool(true)}
		for _, ref := range p.refs[:n] {
			spec.ObjectSet = append(spec.ObjectSet, types.ObjectSpec{Obj: ref})
		}
		res := pc.PropertyCollector.RetrievePropertiesEx(ctx, &types.RetrievePropertiesEx{SpecSet: []types.PropertyFilterSpec{spec}})
		body := res.(*methods.RetrievePropertiesExBody)
		if body.Fault_ != nil {
			return nil, body.Fault_
		}
		result.Objects = body.Res.Returnval.Objects
	}
	if rest := p.refs[n:]; len(rest) > 0 {
		result.Token = pc.keep(&pendingPages{refs: rest, propSet: p.propSet, pageSize: p.pageSize})
	}
	return result, nil
}

func emptyAsUnset(res soap.HasFault) soap.HasFault {
	if body, ok := res.(*methods.RetrievePropertiesExBody); ok && body.Res != nil && body.Res.Returnval != nil &&
		len(body.Res.Returnval.Objects) == 0 {
		body.Res.Returnval = nil
	}
	return res
}

// ContinueRetrievePropertiesEx answers the next page of a result left under a token.
func (pc *pagingCollector) ContinueRetrievePropertiesEx(ctx *simulator.Context, r *types.ContinueRetrievePropertiesEx) soap.HasFault {
	body := &methods.ContinueRetrievePropertiesExBody{}
	pc.pagesMu.Lock()
	pending, ok := pc.pages[r.Token]
	delete(pc.pages, r.Token)
	pc.pagesMu.Unlock()
	if !ok {
		body.Fault_ = simulator.Fault(fmt.Sprintf("unknown or expired token %q", r.Token),
			&types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	page, fault := pc.page(ctx, pending)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Res = &types.ContinueRetrievePropertiesExResponse{Returnval: *page}
	return body
}

// CancelRetrievePropertiesEx drops the rest of a paged result.
func (pc *pagingCollector) CancelRetrievePropertiesEx(ctx *simulator.Context, r *types.CancelRetrievePropertiesEx) soap.HasFault {
	pc.pagesMu.Lock()
	delete(pc.pages, r.Token)
	pc.pagesMu.Unlock()
	return &methods.CancelRetrievePropertiesExBody{Res: &types.CancelRetrievePropertiesExResponse{}}
}

// CreatePropertyCollector makes collectors that page too (the simulator would make plain ones).
func (pc *pagingCollector) CreatePropertyCollector(ctx *simulator.Context, c *types.CreatePropertyCollector) soap.HasFault {
	created := &pagingCollector{}
	// Without a type the registry would name the reference after this Go type.
	created.Self.Type = "PropertyCollector"
	return &methods.CreatePropertyCollectorBody{
		Res: &types.CreatePropertyCollectorResponse{Returnval: ctx.Session.Put(created).Reference()},
	}
}

func (pc *pagingCollector) keep(p *pendingPages) string {
	pc.pagesMu.Lock()
	defer pc.pagesMu.Unlock()
	if pc.pages == nil {
		pc.pages = make(map[string]*pendingPages)
	}
	pc.serial++
	if len(pc.pages) >= maxPendingResults {
		oldest, first := "", -1
		for token, q := range pc.pages {
			if first < 0 || q.issued < first {
				oldest, first = token, q.issued
			}
		}
		delete(pc.pages, oldest)
	}
	token := fmt.Sprintf("bulwark-lab-page-%d", pc.serial)
	p.issued = pc.serial
	pc.pages[token] = p
	return token
}

// FetchResponse mirrors the simulator's internal type of that name (which this package cannot
// import): the SOAP element of a response is named after the Go type.
type FetchResponse struct {
	Returnval types.AnyType `xml:"returnval,omitempty,typeattr"`
}

type fetchBody struct {
	Res    *FetchResponse `xml:"FetchResponse,omitempty"`
	Fault_ *soap.Fault    `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault,omitempty"`
}

func (b *fetchBody) Fault() *soap.Fault { return b.Fault_ }

// Fetch is the call behind pyvmomi's attribute access (vm.snapshot, vm.config, ...). The
// simulator's Fetch indexes an empty list when the property is unset (a VM without snapshots,
// for one), panics and drops the connection; vCenter answers "unset". This answers unset
// properties itself and hands every other call to the simulator.
//
// req is the simulator's internal request type, which this package cannot name; the simulator
// passes it through reflection, so an interface{} parameter receives it.
func (pc *pagingCollector) Fetch(ctx *simulator.Context, req interface{}) soap.HasFault {
	rv := reflect.ValueOf(req).Elem()
	this, _ := rv.FieldByName("This").Interface().(types.ManagedObjectReference)
	prop := rv.FieldByName("Prop").String()
	if this.Type != "ServiceInstance" && simulator.Map.Get(this) != nil {
		res := pc.PropertyCollector.RetrievePropertiesEx(ctx, &types.RetrievePropertiesEx{
			SpecSet: []types.PropertyFilterSpec{{
				PropSet:   []types.PropertySpec{{Type: this.Type, PathSet: []string{prop}}},
				ObjectSet: []types.ObjectSpec{{Obj: this}},
			}},
		})
		if body, ok := res.(*methods.RetrievePropertiesExBody); ok && body.Res != nil && body.Res.Returnval != nil {
			objects := body.Res.Returnval.Objects
			if len(objects) == 1 && len(objects[0].PropSet) == 0 && len(objects[0].MissingSet) == 0 {
				return &fetchBody{Res: &FetchResponse{}}
			}
		}
	}
	out := reflect.ValueOf(&pc.PropertyCollector).MethodByName("Fetch").Call(
		[]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(req)})
	return out[0].Interface().(soap.HasFault)
}
