package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// standInGuest is the lab's STAND-IN GUEST: it stands in for the Windows guest of an Exchange
// server (with VMware Tools, Exchange and its VSS writer), which cannot exist here, as far as
// VMware Tools guest operations go. It takes the place of the simulator's
// GuestOperationsProcessManager in the registry (the simulator dispatches SOAP calls by
// reflection on whatever object the registry holds; its own process manager implements nothing
// but for container-backed VMs) and answers StartProgramInGuest, ListProcessesInGuest and
// TerminateProcessInGuest for every VM of the lab whose tools are running.
//
// Nothing runs on this machine. The command line (program path and arguments) is read, never
// executed, and decides the "process" deterministically:
//
//   - the exit code is 0, unless the text contains "exit N" (or "exit /b N"): then N;
//   - "sleep S" (seconds, decimals allowed; several add up) makes the process run S seconds
//     before it exits; otherwise it exits at once.
//
// Credentials are checked as a guest would: only --guest-user (case-insensitive, like a Windows
// account name) with --guest-password is accepted; anything else is an InvalidGuestLogin fault.
//
// Every invocation is appended as one JSON line to the guest log (--guest-log, in estate.json as
// guest_log) once the process has ended (exited or terminated): VM, program, arguments, pid,
// start and end times in UTC, exit code. The line is written before ListProcessesInGuest first
// reports the end, so a client that saw a process end finds its line in the log. Tests read the
// log to check, for instance, that a pre-snapshot script ended before the snapshot was taken
// and the post-snapshot script started after it.
type standInGuest struct {
	simulator.GuestProcessManager

	user, password string
	logPath        string

	mu      sync.Mutex
	nextPid int64
	procs   map[int64]*guestProcess
}

type guestProcess struct {
	vm         types.ManagedObjectReference
	vmName     string
	pid        int64
	owner      string
	name       string
	program    string
	arguments  string
	start, end time.Time
	exitCode   int32
	terminated bool
	logged     bool
}

// guestLogLine is one line of the guest log.
type guestLogLine struct {
	VM         string  `json:"vm"`
	VMName     string  `json:"vm_name"`
	Pid        int64   `json:"pid"`
	User       string  `json:"user"`
	Program    string  `json:"program"`
	Arguments  string  `json:"arguments"`
	Started    string  `json:"started"`
	Ended      string  `json:"ended"`
	Seconds    float64 `json:"seconds"`
	ExitCode   int32   `json:"exit_code"`
	Terminated bool    `json:"terminated"`
}

var (
	exitPattern  = regexp.MustCompile(`(?i)\bexit(?:\s+/b)?\s+(-?\d+)`)
	sleepPattern = regexp.MustCompile(`(?i)\bsleep\s+(\d+(?:\.\d*)?|\.\d+)`)
)

// keepEnded is how long an ended process stays listed (a Windows guest keeps the exit code of
// a process started through guest operations for about five minutes).
const keepEnded = 10 * time.Minute

// interpretCommand reads the stand-in guest's rules out of a command line.
func interpretCommand(text string) (exitCode int32, run time.Duration) {
	if m := exitPattern.FindStringSubmatch(text); m != nil {
		if n, err := strconv.ParseInt(m[1], 10, 32); err == nil {
			exitCode = int32(n)
		}
	}
	for _, m := range sleepPattern.FindAllStringSubmatch(text, -1) {
		if s, err := strconv.ParseFloat(m[1], 64); err == nil && s > 0 {
			run += time.Duration(s * float64(time.Second))
		}
	}
	return exitCode, run
}

// installStandInGuest replaces the simulator's guest process manager with the stand-in guest.
func installStandInGuest(user, password, logPath string) error {
	ref := types.ManagedObjectReference{Type: "GuestProcessManager", Value: "guestOperationsProcessManager"}
	content := simulator.Map.Get(vim25.ServiceInstance)
	if si, ok := content.(*simulator.ServiceInstance); ok && si.Content.GuestOperationsManager != nil {
		if gom, ok := simulator.Map.Get(*si.Content.GuestOperationsManager).(*simulator.GuestOperationsManager); ok && gom.ProcessManager != nil {
			ref = *gom.ProcessManager
		}
	}
	if simulator.Map.Get(ref) == nil {
		return fmt.Errorf("the simulator has no guest process manager %v to stand in for", ref)
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("guest log: %v", err)
	}
	_ = f.Close()
	g := &standInGuest{user: user, password: password, logPath: logPath, nextPid: 4100, procs: map[int64]*guestProcess{}}
	g.Self = ref
	simulator.Map.Put(g)
	return nil
}

// guestFault is a SOAP fault with the message a vCenter would give.
func guestFault(msg string, fault types.BaseMethodFault) *soap.Fault {
	return simulator.Fault(msg, fault)
}

// check authenticates and finds the VM; it returns the VM's name or a fault.
func (g *standInGuest) check(ref types.ManagedObjectReference, auth types.BaseGuestAuthentication) (string, *soap.Fault) {
	var name string
	var fault *soap.Fault
	obj := simulator.Map.Get(ref)
	if obj == nil {
		return "", guestFault("", &types.ManagedObjectNotFound{Obj: ref})
	}
	simulator.Map.WithLock(obj, func() {
		m := vmMO(ref)
		if m == nil {
			fault = guestFault("", &types.ManagedObjectNotFound{Obj: ref})
			return
		}
		name = m.Name
		if m.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			fault = guestFault(fmt.Sprintf("%s is %s", m.Name, m.Runtime.PowerState), &types.InvalidPowerState{
				RequestedState: types.VirtualMachinePowerStatePoweredOn,
				ExistingState:  m.Runtime.PowerState,
			})
			return
		}
		if m.Guest == nil || m.Guest.ToolsRunningStatus != string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
			fault = guestFault(fmt.Sprintf("VMware Tools is not running in %s", m.Name), &types.GuestOperationsUnavailable{})
		}
	})
	if fault != nil {
		return "", fault
	}
	login, ok := auth.(*types.NamePasswordAuthentication)
	if !ok || !strings.EqualFold(login.Username, g.user) || login.Password != g.password {
		return "", guestFault("Failed to authenticate with the guest operating system using the supplied credentials.", &types.InvalidGuestLogin{})
	}
	return name, nil
}

// settle marks a process ended once its time has come and writes its log line. Holds g.mu.
func (g *standInGuest) settle(p *guestProcess, now time.Time) {
	if p.logged || now.Before(p.end) {
		return
	}
	p.logged = true
	line := guestLogLine{
		VM: p.vm.Value, VMName: p.vmName, Pid: p.pid, User: p.owner, Program: p.program,
		Arguments: p.arguments, Started: utc(p.start), Ended: utc(p.end),
		Seconds: p.end.Sub(p.start).Seconds(), ExitCode: p.exitCode, Terminated: p.terminated,
	}
	var data bytes.Buffer
	enc := json.NewEncoder(&data)
	enc.SetEscapeHTML(false) // command lines keep their "&" and "<" as typed
	if err := enc.Encode(line); err != nil {
		return
	}
	f, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bulwark-lab: guest log: %v\n", err)
		return
	}
	defer f.Close()
	_, _ = f.Write(data.Bytes())
}

func utc(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// prune forgets processes that ended long ago. Holds g.mu.
func (g *standInGuest) prune(now time.Time) {
	for pid, p := range g.procs {
		g.settle(p, now)
		if p.logged && now.Sub(p.end) > keepEnded {
			delete(g.procs, pid)
		}
	}
}

// StartProgramInGuest "starts" the program: it records the process and when it will end.
func (g *standInGuest) StartProgramInGuest(req *types.StartProgramInGuest) soap.HasFault {
	body := &methods.StartProgramInGuestBody{}
	vmName, fault := g.check(req.Vm, req.Auth)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	spec := req.Spec.GetGuestProgramSpec()
	if strings.TrimSpace(spec.ProgramPath) == "" {
		body.Fault_ = guestFault("the program path is empty", &types.InvalidArgument{InvalidProperty: "programPath"})
		return body
	}
	exitCode, run := interpretCommand(spec.ProgramPath + " " + spec.Arguments)
	now := time.Now()

	g.mu.Lock()
	g.prune(now)
	g.nextPid += 4
	p := &guestProcess{
		vm: req.Vm, vmName: vmName, pid: g.nextPid, owner: g.user,
		name:    path.Base(strings.ReplaceAll(spec.ProgramPath, `\`, "/")),
		program: spec.ProgramPath, arguments: spec.Arguments,
		start: now, end: now.Add(run), exitCode: exitCode,
	}
	g.procs[p.pid] = p
	g.settle(p, now)
	g.mu.Unlock()

	if run > 0 {
		// The line is written when the process ends, even if nobody asks about it.
		time.AfterFunc(run, func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.settle(p, time.Now())
		})
	}
	body.Res = &types.StartProgramInGuestResponse{Returnval: p.pid}
	return body
}

// ListProcessesInGuest lists the stand-in processes of the VM (those named, or all).
func (g *standInGuest) ListProcessesInGuest(req *types.ListProcessesInGuest) soap.HasFault {
	body := &methods.ListProcessesInGuestBody{}
	if _, fault := g.check(req.Vm, req.Auth); fault != nil {
		body.Fault_ = fault
		return body
	}
	wanted := map[int64]bool{}
	for _, pid := range req.Pids {
		wanted[pid] = true
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var infos []types.GuestProcessInfo
	for _, p := range g.procs {
		if p.vm != req.Vm || (len(wanted) > 0 && !wanted[p.pid]) {
			continue
		}
		g.settle(p, now)
		info := types.GuestProcessInfo{
			Name: p.name, Pid: p.pid, Owner: p.owner,
			CmdLine:   strings.TrimSpace(`"` + p.program + `" ` + p.arguments),
			StartTime: p.start,
		}
		if p.logged {
			end := p.end
			info.EndTime = &end
			info.ExitCode = p.exitCode
		}
		infos = append(infos, info)
	}
	body.Res = &types.ListProcessesInGuestResponse{Returnval: infos}
	return body
}

// TerminateProcessInGuest ends a running stand-in process now (exit code 1, as Windows'
// TerminateProcess is usually called).
func (g *standInGuest) TerminateProcessInGuest(req *types.TerminateProcessInGuest) soap.HasFault {
	body := &methods.TerminateProcessInGuestBody{}
	if _, fault := g.check(req.Vm, req.Auth); fault != nil {
		body.Fault_ = fault
		return body
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.procs[req.Pid]
	if !ok || p.vm != req.Vm {
		body.Fault_ = guestFault(fmt.Sprintf("no process %d in the guest", req.Pid), &types.GuestProcessNotFound{Pid: req.Pid})
		return body
	}
	g.settle(p, now)
	if !p.logged {
		p.end = now
		p.exitCode = 1
		p.terminated = true
		g.settle(p, now)
	}
	body.Res = &types.TerminateProcessInGuestResponse{}
	return body
}
