package main

import (
	"fmt"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// pagingCollector is the lab's PropertyCollector. The simulator's own RetrievePropertiesEx
// ignores RetrieveOptions.maxObjects and answers everything in one response, and it does not
// implement ContinueRetrievePropertiesEx at all. A real vCenter pages large results, so a client
// that never follows tokens silently loses objects there. This wrapper pages the simulator's
// answer and keeps the remainder under a token, so Bulwark's paging code runs for real.
//
// The simulator makes one instance per session by reflecting on the type registered for the
// PropertyCollector singleton, so every session gets a pagingCollector (zero value) of its own.
type pagingCollector struct {
	simulator.PropertyCollector

	pagesMu sync.Mutex
	pages   map[string]*pendingPages
	serial  int
}

type pendingPages struct {
	objects  []types.ObjectContent
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
	res := pc.PropertyCollector.RetrievePropertiesEx(ctx, r)
	body, ok := res.(*methods.RetrievePropertiesExBody)
	if !ok || body.Res == nil || body.Res.Returnval == nil {
		return res
	}
	size := pc.effectivePageSize(r)
	objects := body.Res.Returnval.Objects
	if len(objects) == 0 {
		// vCenter answers an empty result with no RetrieveResult at all.
		body.Res.Returnval = nil
		return body
	}
	if size <= 0 || len(objects) <= size {
		return body
	}
	body.Res.Returnval.Objects = objects[:size]
	body.Res.Returnval.Token = pc.keep(objects[size:], size)
	return body
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
	result := types.RetrieveResult{Objects: pending.objects}
	if len(pending.objects) > pending.pageSize {
		result.Objects = pending.objects[:pending.pageSize]
		result.Token = pc.keep(pending.objects[pending.pageSize:], pending.pageSize)
	}
	body.Res = &types.ContinueRetrievePropertiesExResponse{Returnval: result}
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

func (pc *pagingCollector) keep(objects []types.ObjectContent, pageSize int) string {
	pc.pagesMu.Lock()
	defer pc.pagesMu.Unlock()
	if pc.pages == nil {
		pc.pages = make(map[string]*pendingPages)
	}
	pc.serial++
	if len(pc.pages) >= maxPendingResults {
		oldest, first := "", -1
		for token, p := range pc.pages {
			if first < 0 || p.issued < first {
				oldest, first = token, p.issued
			}
		}
		delete(pc.pages, oldest)
	}
	token := fmt.Sprintf("bulwark-lab-page-%d", pc.serial)
	pc.pages[token] = &pendingPages{objects: objects, pageSize: pageSize, issued: pc.serial}
	return token
}
